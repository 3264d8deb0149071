//! Closed-loop load: N tasks, each sending one request, awaiting its answer,
//! and sending the next, for a fixed duration; and the end-to-end run that
//! sends a fixed number of offers and waits until PostgreSQL shows them.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sqlx::PgPool;
use uuid::Uuid;

/// What one concurrency level measured.
#[derive(Debug, Clone, Copy)]
pub struct LevelResult {
    /// Number of tasks sending at once.
    pub concurrency: usize,
    /// Operations that succeeded.
    pub ok: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Wall time from the start until the last task finished, in seconds.
    pub seconds: f64,
    /// Median latency of the successful operations, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency of the successful operations, in milliseconds.
    pub p99_ms: f64,
}

impl LevelResult {
    /// Successful operations per second.
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ok as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Value at quantile `q` (0..=1) of sorted `values` (microseconds), in ms.
fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)] as f64 / 1000.0
}

/// Runs `concurrency` tasks calling `op(task, sequence)` back to back for
/// `duration`, and measures throughput and latency of the successful calls.
pub async fn closed_loop<F, Fut>(concurrency: usize, duration: Duration, op: F) -> LevelResult
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let start = Instant::now();
    let deadline = start + duration;
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for task in 0..concurrency {
        let op = op.clone();
        let errors = Arc::clone(&errors);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut sequence = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                match op(task, sequence).await {
                    Ok(()) => latencies.push(sent.elapsed().as_micros() as u64),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                sequence += 1;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        if let Ok(latencies) = task.await {
            all.extend(latencies);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    all.sort_unstable();
    LevelResult {
        concurrency,
        ok: all.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        p50_ms: quantile_ms(&all, 0.50),
        p99_ms: quantile_ms(&all, 0.99),
    }
}

/// An HTTP client whose pool keeps `concurrency` idle connections.
pub fn http_client(concurrency: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")
}

/// The JSON body of `POST /offer` number `n` on `book` by `seller`: prices
/// spread over 1.00..=100.99, stock 1..=5.
pub fn offer_body(id: Uuid, book: Uuid, seller: Uuid, n: u64) -> serde_json::Value {
    let cents = 100 + (n.wrapping_mul(7919) % 10_000);
    serde_json::json!({
        "id": id,
        "bookId": book,
        "sellerId": seller,
        "price": cents as f64 / 100.0,
        "stock": 1 + n % 5,
    })
}

/// Sends `POST {api}/offer` and fails unless the answer is a success.
pub async fn post_offer(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> Result<()> {
    let response = client.post(url).json(body).send().await?;
    if !response.status().is_success() {
        bail!("POST /offer answered {}", response.status());
    }
    Ok(())
}

/// Creates seller `seller` and book `book` through the API and waits until
/// both are visible through its queries.
pub async fn seed(client: &reqwest::Client, api: &str, seller: Uuid, book: Uuid) -> Result<()> {
    let user = client
        .put(format!("{api}/user"))
        .json(&serde_json::json!({"id": seller, "name": "Bench Seller"}))
        .send()
        .await?;
    if !user.status().is_success() {
        bail!("PUT /user answered {}", user.status());
    }
    let saved = client
        .put(format!("{api}/book"))
        .json(&serde_json::json!({"id": book, "title": "Bench Book", "author": "Bench Author"}))
        .send()
        .await?;
    if !saved.status().is_success() {
        bail!("PUT /book answered {}", saved.status());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let user_seen = client.get(format!("{api}/users/{seller}")).send().await?;
        let book_seen = client.get(format!("{api}/books/{book}")).send().await?;
        if user_seen.status().is_success() && book_seen.status().is_success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("seeded user or book not visible after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the end-to-end run measured.
#[derive(Debug, Clone, Copy)]
pub struct EndToEnd {
    /// Offers sent and accepted.
    pub offers: usize,
    /// Distinct books they name.
    pub books: usize,
    /// Rejected attempts that were sent again.
    pub retries: u64,
    /// Seconds from the first send until the last acceptance.
    pub accept_seconds: f64,
    /// Seconds from the first send until every offer was in PostgreSQL and
    /// the book's cheapest offer was the right one.
    pub applied_seconds: f64,
}

impl EndToEnd {
    /// Applied commands per second, end to end.
    pub fn applied_per_second(&self) -> f64 {
        self.offers as f64 / self.applied_seconds
    }

    /// Accepted commands per second during the send.
    pub fn accepted_per_second(&self) -> f64 {
        self.offers as f64 / self.accept_seconds
    }
}

/// How often the end-to-end run counts the applied offers.
const POLL_APPLIED: Duration = Duration::from_millis(200);

/// Where the end-to-end offers go: seeded books and sellers.
#[derive(Debug, Clone)]
pub struct Targets {
    /// Books the offers name, each chosen by the offer's number.
    pub books: Vec<Uuid>,
    /// Sellers the offers name.
    pub sellers: Vec<Uuid>,
}

impl Targets {
    /// Loads every book id and up to 10,000 seller ids of the database.
    pub async fn load(pool: &PgPool) -> Result<Self> {
        let books: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM books")
            .fetch_all(pool)
            .await
            .context("loading book ids")?;
        let sellers: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM users LIMIT 10000")
            .fetch_all(pool)
            .await
            .context("loading seller ids")?;
        if books.is_empty() || sellers.is_empty() {
            bail!("no seeded books or users to send offers to");
        }
        Ok(Self {
            books: books.into_iter().map(|(id,)| id).collect(),
            sellers: sellers.into_iter().map(|(id,)| id).collect(),
        })
    }

    /// Book and seller of offer number `n`: books spread evenly (a
    /// multiplicative hash of `n`), so consecutive offers name different books.
    fn of(&self, n: u64) -> (Uuid, Uuid) {
        let book = (n.wrapping_mul(2_654_435_761) % self.books.len() as u64) as usize;
        let seller = (n % self.sellers.len() as u64) as usize;
        (self.books[book], self.sellers[seller])
    }
}

/// Sends `total` offers spread over `targets`' books at `concurrency`, each
/// one again until accepted, then waits until PostgreSQL has all of them and
/// every book they name has its cheapest in-stock offer as `books.offer_id`.
pub async fn end_to_end(
    api: &str,
    pool: &PgPool,
    targets: Targets,
    total: usize,
    concurrency: usize,
    timeout: Duration,
) -> Result<EndToEnd> {
    let (before,): (i64,) = sqlx::query_as("SELECT count(*) FROM offers")
        .fetch_one(pool)
        .await
        .context("counting offers")?;
    let targets = Arc::new(targets);
    let client = http_client(concurrency)?;
    let url = format!("{api}/offer");
    let next = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (client, url, next, retries, targets) = (
            client.clone(),
            url.clone(),
            Arc::clone(&next),
            Arc::clone(&retries),
            Arc::clone(&targets),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return Ok::<(), anyhow::Error>(());
                }
                let (book, seller) = targets.of(n as u64);
                let body = offer_body(Uuid::new_v4(), book, seller, n as u64);
                let mut attempts = 0;
                while let Err(error) = post_offer(&client, &url, &body).await {
                    attempts += 1;
                    retries.fetch_add(1, Ordering::Relaxed);
                    if attempts > 20 {
                        return Err(error.context("offer not accepted after 20 attempts"));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.context("a sending task panicked")??;
    }
    let accept_seconds = start.elapsed().as_secs_f64();
    let mut touched: Vec<Uuid> = (0..total as u64).map(|n| targets.of(n).0).collect();
    touched.sort_unstable();
    touched.dedup();
    let deadline = start + timeout;
    loop {
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM offers")
            .fetch_one(pool)
            .await
            .context("counting the applied offers")?;
        let applied = (count - before).max(0) as usize;
        let stale = if applied >= total {
            let (stale,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM books b
                 WHERE b.id = ANY($1)
                   AND b.offer_id IS DISTINCT FROM
                       (SELECT id FROM offers WHERE book_id = b.id AND stock > 0
                        ORDER BY price, id LIMIT 1)",
            )
            .bind(&touched)
            .fetch_one(pool)
            .await
            .context("checking the books' cheapest offers")?;
            Some(stale)
        } else {
            None
        };
        if stale == Some(0) {
            break;
        }
        if Instant::now() > deadline {
            bail!("after {timeout:?}: {applied}/{total} offers applied, books with a stale cheapest offer: {stale:?}");
        }
        // Counting scans the whole offers table: often enough for a 1%
        // resolution on a run of 20 s, rarely enough not to load PostgreSQL.
        tokio::time::sleep(POLL_APPLIED).await;
    }
    Ok(EndToEnd {
        offers: total,
        books: touched.len(),
        retries: retries.load(Ordering::Relaxed),
        accept_seconds,
        applied_seconds: start.elapsed().as_secs_f64(),
    })
}
