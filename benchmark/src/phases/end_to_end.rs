//! Offers applied end to end: a fixed number of offers spread over the
//! books of a `marketplace seed` catalogue, timed from the first send until
//! PostgreSQL shows every one of them and every book its cheapest offer;
//! then, in the same run, as many messages through the raw two hops
//! ([`crate::raw_two_hop`]) from as many publishers, the reference.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::load::{http_client, offer_body, post_offer};
use crate::processes::System;
use crate::raw_two_hop::{RawEndToEnd, RawTwoHop};

/// Concurrency of the end-to-end run.
pub(crate) const CONCURRENCY: usize = 64;

/// What the end-to-end run measured.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct EndToEnd {
    pub(crate) offers: usize,
    /// Distinct books they name.
    pub(crate) books: usize,
    /// Rejected attempts that were sent again.
    pub(crate) retries: u64,
    /// Seconds from the first send until the last acceptance.
    pub(crate) accept_seconds: f64,
    /// Seconds from the first send until every offer was in PostgreSQL and
    /// the book's cheapest offer was the right one.
    pub(crate) applied_seconds: f64,
    /// Accepted commands per second during the send.
    pub(crate) accepted_per_second: f64,
    /// Applied commands per second, end to end.
    pub(crate) applied_per_second: f64,
    pub(crate) concurrency: usize,
    /// The raw two hops with the same messages and publishers, measured
    /// right after; `None` when they failed.
    pub(crate) raw: Option<RawEndToEnd>,
}

/// Seeds `books` books, then sends `offers` offers over them and waits until
/// all are applied. A failure is reported and leaves the other figures.
pub(crate) async fn run(
    system: &System,
    pool: &PgPool,
    raw: &RawTwoHop,
    offers: usize,
    books: i64,
) -> Result<Option<EndToEnd>> {
    println!("seeding {books} books (marketplace seed)");
    system.seed(books).await?;
    let targets = Targets::load(pool).await?;
    println!(
        "end to end: {offers} offers over {} books at concurrency {CONCURRENCY}",
        targets.books.len()
    );
    let timeout = Duration::from_secs(900);
    match send_and_wait(&system.api_url, pool, targets, offers, CONCURRENCY, timeout).await {
        Ok(mut e2e) => {
            println!(
                "end to end: accepted in {:.2} s, applied in {:.2} s ({:.0}/s)",
                e2e.accept_seconds, e2e.applied_seconds, e2e.applied_per_second
            );
            // The worker's follow-up events (relay, cheapest-offer refresh)
            // done before the reference starts.
            system.wait_worker_idle().await?;
            println!("raw two hops: {offers} messages at concurrency {CONCURRENCY}");
            match raw.end_to_end(offers, CONCURRENCY, timeout).await {
                Ok(reference) => {
                    println!(
                        "raw two hops: published in {:.2} s, applied in {:.2} s ({:.0}/s) | end to end API/raw {:.3}",
                        reference.publish_seconds,
                        reference.applied_seconds,
                        reference.applied_per_second,
                        e2e.applied_per_second / reference.applied_per_second
                    );
                    e2e.raw = Some(reference);
                }
                Err(error) => eprintln!("raw two hops failed: {error:#}"),
            }
            Ok(Some(e2e))
        }
        Err(error) => {
            eprintln!("end to end failed: {error:#}");
            Ok(None)
        }
    }
}

/// How often the end-to-end run counts the applied offers.
const POLL_APPLIED: Duration = Duration::from_millis(200);

/// Where the end-to-end offers go: seeded books and sellers.
#[derive(Debug, Clone)]
struct Targets {
    /// Books the offers name, each chosen by the offer's number.
    books: Vec<Uuid>,
    /// Sellers the offers name.
    sellers: Vec<Uuid>,
}

impl Targets {
    /// Loads every book id and up to 10,000 seller ids of the database.
    async fn load(pool: &PgPool) -> Result<Self> {
        let books = sqlx::query_scalar("SELECT id FROM books")
            .fetch_all(pool)
            .await
            .context("loading book ids")?;
        let sellers = sqlx::query_scalar("SELECT id FROM users LIMIT 10000")
            .fetch_all(pool)
            .await
            .context("loading seller ids")?;
        if books.is_empty() || sellers.is_empty() {
            bail!("no seeded books or users to send offers to");
        }
        Ok(Self { books, sellers })
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
async fn send_and_wait(
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
    let applied_seconds = start.elapsed().as_secs_f64();
    Ok(EndToEnd {
        offers: total,
        books: touched.len(),
        retries: retries.load(Ordering::Relaxed),
        accept_seconds,
        applied_seconds,
        accepted_per_second: total as f64 / accept_seconds,
        applied_per_second: total as f64 / applied_seconds,
        concurrency,
        raw: None,
    })
}
