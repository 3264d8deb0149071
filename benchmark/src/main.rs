//! Side-by-side benchmark of the marketplace over RabbitMQ.
//!
//! Starts `marketplace serve --bus rabbitmq` and `marketplace worker` (release
//! build) on a fresh database and namespace, measures accepted `POST /offer`
//! per second and latency at several concurrencies beside raw lapin confirmed
//! publishes at the same concurrencies, then the end-to-end applied rate, and
//! writes `docs/performance.md` with charts.
//!
//! Run: `cargo build --release -p marketplace && cargo run --release -p benchmark -- [--quick]`.

mod load;
mod processes;
mod raw_lapin;
mod report;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use uuid::Uuid;

use load::{closed_loop, end_to_end, http_client, offer_body, post_offer, seed, LevelResult};
use processes::System;
use raw_lapin::RawTarget;
use report::{Machine, Report};

/// Concurrency levels measured.
const LEVELS: [usize; 5] = [1, 4, 16, 64, 256];
/// Concurrency of the end-to-end run.
const END_TO_END_CONCURRENCY: usize = 64;

/// Options from the command line.
#[derive(Debug, Clone, Copy)]
struct Options {
    quick: bool,
}

impl Options {
    fn parse() -> Result<Self> {
        let mut quick = false;
        for arg in std::env::args().skip(1) {
            match arg.as_str() {
                "--quick" => quick = true,
                "-h" | "--help" => {
                    println!("usage: benchmark [--quick]");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?} (usage: benchmark [--quick])"),
            }
        }
        Ok(Self { quick })
    }

    fn level_duration(self) -> Duration {
        Duration::from_secs(if self.quick { 2 } else { 5 })
    }

    fn offers(self) -> usize {
        if self.quick {
            5_000
        } else {
            50_000
        }
    }

    fn command(self) -> String {
        format!(
            "cargo build --release -p marketplace && cargo run --release -p benchmark{}",
            if self.quick { " -- --quick" } else { "" }
        )
    }
}

/// Where `docs/performance.md` and the charts go.
fn docs_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match manifest.parent() {
        Some(root) => root.join("docs"),
        None => manifest.join("docs"),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let options = Options::parse()?;
    let id = Uuid::new_v4().simple().to_string();
    let outcome = tokio::select! {
        outcome = run(options, &id) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // The child processes are killed on drop when `run` returns or is
    // cancelled; what they left behind is removed here.
    cleanup(&id).await;
    let report = outcome?;
    println!("\n{}", report.tables());
    let dir = docs_dir();
    std::fs::create_dir_all(&dir).context("creating docs/")?;
    let charts = match report.charts(&dir) {
        Ok(()) => true,
        Err(error) => {
            eprintln!("charts not written: {error:#}");
            false
        }
    };
    let path = dir.join("performance.md");
    std::fs::write(&path, report.markdown(charts)).context("writing performance.md")?;
    println!("wrote {}", path.display());
    Ok(())
}

async fn cleanup(id: &str) {
    // Give killed processes a moment to close their connections.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Err(error) = processes::drop_database(&format!("bench_{id}")).await {
        eprintln!("cleanup: {error:#}");
    }
    match processes::delete_namespace(&format!("bench-{id}")).await {
        Ok((queues, exchanges)) => {
            eprintln!("cleanup: deleted {queues} queues and {exchanges} exchanges of bench-{id}")
        }
        Err(error) => eprintln!("cleanup: {error:#}"),
    }
}

/// Waits until the book's offers in PostgreSQL reach `expected`, so that the
/// worker's backlog does not compete with the next measurement.
async fn drain(pool: &sqlx::PgPool, book: Uuid, expected: u64) -> Result<()> {
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

async fn measure_api(
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

async fn run(options: Options, id: &str) -> Result<Report> {
    let machine = Machine::detect();
    let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let client = http_client(8)?;
    println!("starting the API and the worker (database bench_{id}, namespace bench-{id})");
    let mut system = System::start(&client, id).await?;
    println!("logs in {}", system.log_dir.display());
    let pool = system.pool().await?;
    let seller = Uuid::new_v4();
    let book = Uuid::new_v4();
    let e2e_book = Uuid::new_v4();
    seed(&client, &system.api_url, seller, book).await?;
    seed(&client, &system.api_url, seller, e2e_book).await?;
    let raw = RawTarget::connect(&system.namespace).await?;

    let duration = options.level_duration();
    // Warm up both paths (connections, JIT-free but caches and pools).
    let warm = measure_api(&system.api_url, seller, book, 4, Duration::from_secs(1)).await?;
    let mut accepted = warm.ok;
    raw.measure(4, Duration::from_secs(1)).await?;
    drain(&pool, book, accepted).await?;

    let mut levels = Vec::new();
    for concurrency in LEVELS {
        let api = measure_api(&system.api_url, seller, book, concurrency, duration).await?;
        accepted += api.ok;
        drain(&pool, book, accepted).await?;
        let raw_level = raw.measure(concurrency, duration).await?;
        println!(
            "c={concurrency:>3}  API {:>8.0}/s p50 {:>7.2} ms p99 {:>7.2} ms ({} errors) | raw {:>8.0}/s p50 {:>7.2} ms p99 {:>7.2} ms ({} errors) | API/raw {:.3}",
            api.per_second(),
            api.p50_ms,
            api.p99_ms,
            api.errors,
            raw_level.per_second(),
            raw_level.p50_ms,
            raw_level.p99_ms,
            raw_level.errors,
            api.per_second() / raw_level.per_second(),
        );
        levels.push((api, raw_level));
    }
    raw.delete().await?;

    println!(
        "end to end: {} offers at concurrency {END_TO_END_CONCURRENCY}",
        options.offers()
    );
    let e2e = match end_to_end(
        &system.api_url,
        &pool,
        seller,
        e2e_book,
        options.offers(),
        END_TO_END_CONCURRENCY,
        Duration::from_secs(900),
    )
    .await
    {
        Ok(e2e) => {
            println!(
                "end to end: accepted in {:.2} s, applied in {:.2} s ({:.0}/s)",
                e2e.accept_seconds,
                e2e.applied_seconds,
                e2e.applied_per_second()
            );
            Some(e2e)
        }
        Err(error) => {
            eprintln!("end to end failed: {error:#}");
            None
        }
    };
    let (api_rss, worker_rss) = system.peak_rss_kib();
    pool.close().await;
    system.stop().await;
    Ok(Report {
        machine,
        date,
        command: options.command(),
        level_seconds: duration.as_secs_f64(),
        levels,
        end_to_end: e2e,
        end_to_end_concurrency: END_TO_END_CONCURRENCY,
        api_peak_rss_kib: api_rss,
        worker_peak_rss_kib: worker_rss,
    })
}
