//! Accepted `POST /offer` beside its raw limit, per concurrency level: the
//! API (`serve --bus rabbitmq`) against persistent confirmed publishes
//! straight through lapin ([`crate::raw_lapin`]), each side alone on the
//! CPUs while it is measured. Beside both, the HTTP limit: a bare axum
//! server parsing the same body ([`crate::bare_axum`]), so the API's CPU per
//! accepted offer reads against what HTTP and JSON alone cost and what a
//! confirmed publish alone costs its publisher.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::bare_axum::BareAxum;
use crate::cpu::{broker_pid, CpuMeter, CpuPerMessage, CpuSource};
use crate::load::{closed_loop, http_client, offer_body, post_offer};
use crate::processes::System;
use crate::raw_lapin::RawTarget;
use crate::stats::LevelResult;

/// Concurrency levels measured by default.
pub(crate) const LEVELS: [usize; 5] = [1, 4, 16, 64, 256];

/// Both sides at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OfferLevel {
    /// The API's accepted `POST /offer`.
    pub(crate) api: LevelResult,
    /// Raw confirmed publishes.
    pub(crate) raw: LevelResult,
    /// CPU per accepted offer: `api` process, load `generator`, `broker`.
    pub(crate) api_cpu: CpuPerMessage,
    /// CPU per raw publish: load `generator`, `broker`.
    pub(crate) raw_cpu: CpuPerMessage,
    /// The bare axum server answering the same `POST /offer`.
    pub(crate) bare: LevelResult,
    /// CPU per bare request: `bare` server process, load `generator`.
    pub(crate) bare_cpu: CpuPerMessage,
}

/// Measures each of `levels` for `duration` per side.
pub(crate) async fn run(
    system: &System,
    pool: &PgPool,
    levels: &[usize],
    duration: Duration,
) -> Result<Vec<OfferLevel>> {
    let broker = broker_pid();
    let mut sides = Sides::start(system, pool).await?;
    let bare = BareAxum::start().await?;
    measure_api(
        &bare.url,
        sides.seller,
        sides.book,
        4,
        Duration::from_secs(1),
    )
    .await?;

    let mut measured = Vec::new();
    for &concurrency in levels {
        let pair = sides
            .measure(system, pool, concurrency, duration, broker)
            .await?;
        let meter = CpuMeter::start(vec![
            ("bare", CpuSource::Process(bare.pid())),
            ("generator", CpuSource::Process(Some(std::process::id()))),
        ]);
        let bare_level =
            measure_api(&bare.url, sides.seller, sides.book, concurrency, duration).await?;
        let bare_cpu = meter.per_message_us(bare_level.ok);
        println!(
            "       CPU per request: API process {} µs | bare axum {} µs ({:.0}/s) | raw publisher {} µs",
            micros(pair.api_cpu.by_process.get("api")),
            micros(bare_cpu.by_process.get("bare")),
            bare_level.rate,
            micros(pair.raw_cpu.by_process.get("generator")),
        );
        measured.push(OfferLevel {
            api: pair.api,
            raw: pair.raw,
            api_cpu: pair.api_cpu,
            raw_cpu: pair.raw_cpu,
            bare: bare_level,
            bare_cpu,
        });
    }
    sides.delete().await?;
    Ok(measured)
}

/// Accepted `POST /offer` and raw confirmed publishes at one concurrency,
/// with the CPU each used per message.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Pair {
    pub(crate) api: LevelResult,
    pub(crate) raw: LevelResult,
    /// CPU per accepted offer: `api` process, load `generator`, `broker`.
    pub(crate) api_cpu: CpuPerMessage,
    /// CPU per raw publish: load `generator`, `broker`.
    pub(crate) raw_cpu: CpuPerMessage,
}

/// Both sides of a level, ready: the seller and book the offers name, the
/// raw queue on the system's broker, and how many offers the API accepted.
pub(crate) struct Sides {
    pub(crate) seller: Uuid,
    pub(crate) book: Uuid,
    raw: RawTarget,
    accepted: u64,
}

impl Sides {
    /// Creates the seller and book through the API, declares the raw queue
    /// on the broker the system uses (of its queue type), and warms up both
    /// paths (connections, caches and pools).
    pub(crate) async fn start(system: &System, pool: &PgPool) -> Result<Self> {
        let client = http_client(8)?;
        let seller = Uuid::new_v4();
        let book = Uuid::new_v4();
        seed(&client, &system.api_url, seller, book).await?;
        let raw = RawTarget::connect(system.services(), &system.namespace).await?;
        let warm = measure_api(&system.api_url, seller, book, 4, Duration::from_secs(1)).await?;
        raw.measure(4, Duration::from_secs(1)).await?;
        drain(pool, book, warm.ok).await?;
        system.wait_worker_idle().await?;
        Ok(Self {
            seller,
            book,
            raw,
            accepted: warm.ok,
        })
    }

    /// The API alone, then raw publishes alone, at `concurrency` for
    /// `duration` each, counting the CPU of the API, of this process and
    /// of `broker`. The worker is paused while the API accepts, so that both
    /// sides only publish, then applies the backlog before the raw side.
    pub(crate) async fn measure(
        &mut self,
        system: &System,
        pool: &PgPool,
        concurrency: usize,
        duration: Duration,
        broker: Option<u32>,
    ) -> Result<Pair> {
        system.pause_worker(true)?;
        let meter = CpuMeter::start(vec![
            ("api", CpuSource::Process(system.api.id())),
            ("generator", CpuSource::Process(Some(std::process::id()))),
            ("broker", CpuSource::Process(broker)),
        ]);
        let api = measure_api(
            &system.api_url,
            self.seller,
            self.book,
            concurrency,
            duration,
        )
        .await;
        let api_cpu = api.as_ref().ok().map(|api| meter.per_message_us(api.ok));
        system.pause_worker(false)?;
        let (api, api_cpu) = (api?, api_cpu.unwrap_or_default());
        self.accepted += api.ok;
        drain(pool, self.book, self.accepted).await?;
        system.wait_worker_idle().await?;
        let meter = CpuMeter::start(vec![
            ("generator", CpuSource::Process(Some(std::process::id()))),
            ("broker", CpuSource::Process(broker)),
        ]);
        let raw = self.raw.measure(concurrency, duration).await?;
        let raw_cpu = meter.per_message_us(raw.ok);
        println!(
            "c={concurrency:>3}  API {:>8.0}/s p50 {:>7.2} ms p99 {:>7.2} ms ({} errors) | raw {:>8.0}/s p50 {:>7.2} ms p99 {:>7.2} ms ({} errors) | API/raw {:.3}",
            api.rate,
            api.p50_ms,
            api.p99_ms,
            api.errors,
            raw.rate,
            raw.p50_ms,
            raw.p99_ms,
            raw.errors,
            api.rate / raw.rate,
        );
        Ok(Pair {
            api,
            raw,
            api_cpu,
            raw_cpu,
        })
    }

    /// Deletes the raw queue.
    pub(crate) async fn delete(self) -> Result<()> {
        self.raw.delete().await
    }
}

/// A measured CPU time for the console, `-` when not measured.
fn micros(us: Option<&Option<f64>>) -> String {
    us.copied()
        .flatten()
        .map_or_else(|| "-".to_owned(), |us| format!("{us:.0}"))
}

pub(crate) async fn measure_api(
    api_url: &str,
    seller: Uuid,
    book: Uuid,
    concurrency: usize,
    duration: Duration,
) -> Result<LevelResult> {
    let client = http_client(concurrency)?;
    let url = format!("{api_url}/offer");
    Ok(closed_loop(concurrency, duration, move |_, n| {
        let (client, url) = (client.clone(), url.clone());
        async move { post_offer(&client, &url, &offer_body(Uuid::new_v4(), book, seller, n)).await }
    })
    .await)
}

/// Waits until the book's offers in PostgreSQL reach `expected`, so that the
/// worker's backlog does not compete with the next measurement.
pub(crate) async fn drain(pool: &PgPool, book: Uuid, expected: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM offers WHERE book_id = $1")
            .bind(book)
            .fetch_one(pool)
            .await
            .context("counting offers")?;
        if count as u64 >= expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("worker backlog not drained: {count}/{expected} offers applied");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates seller `seller` and book `book` through the API and waits until
/// both are visible through its queries.
pub(crate) async fn seed(
    client: &reqwest::Client,
    api: &str,
    seller: Uuid,
    book: Uuid,
) -> Result<()> {
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
