//! The durable default beside raw batched inserts of the same rows into
//! `bus_messages` of the same database, on SQLite and on PostgreSQL.
//!
//! First the bus in process, without HTTP ([`durable_bus`]): the durable
//! bus's accepted sends beside raw inserts grouped as its writer groups
//! them, and the in-memory async bus's sends. Then accepted `POST /offer`
//! of `marketplace serve` with its durable bus beside raw inserts of
//! `rows_per_transaction` rows per transaction, with as many concurrent
//! clients.
//!
//! Each API level measures the API, waits until its own consumer (it runs
//! in the API process: nothing to pause) has emptied `bus_messages`, then
//! measures the raw inserts on the idle API's database. Raw rows are due in
//! year 9999, so the API's consumer leaves them alone, and are deleted
//! after each level.
//!
//! [`durable_bus`]: crate::phases::durable_bus

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use uuid::Uuid;

use crate::load::http_client;
use crate::phases::durable_bus::{self, BusReport};
use crate::phases::offers::{measure_api, seed};
use crate::phases::raw_inserts::{measure_raw, Db};
use crate::processes::{drop_database, free_port, start, Services};
use crate::stats::LevelResult;

/// Rows per raw transaction by default.
pub(crate) const ROWS_PER_TRANSACTION: usize = 50;

/// What the durable phase measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DurableReport {
    /// Seconds per level and side.
    pub(crate) level_seconds: f64,
    /// Rows per raw transaction beside the API.
    pub(crate) rows_per_transaction: usize,
    /// The bus in process, and the in-memory bus.
    pub(crate) bus: BusReport,
    /// The API over HTTP, per database.
    pub(crate) api: Vec<DurableRun>,
}

/// One database's levels.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DurableRun {
    /// `SQLite` or `PostgreSQL`.
    pub(crate) database: &'static str,
    pub(crate) levels: Vec<DurableLevel>,
}

/// Both sides at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DurableLevel {
    /// The API's accepted `POST /offer`.
    pub(crate) api: LevelResult,
    /// Raw transactions (each of `rows_per_transaction` rows).
    pub(crate) raw: LevelResult,
    /// Rows per raw transaction.
    pub(crate) rows_per_transaction: usize,
    /// Raw rows inserted per second.
    pub(crate) raw_rows_per_second: f64,
}

/// Measures the bus in process, then the default configuration over HTTP,
/// each on SQLite, then on PostgreSQL.
pub(crate) async fn run(
    services: &Services,
    id: &str,
    levels: &[usize],
    duration: Duration,
    rows_per_transaction: usize,
) -> Result<DurableReport> {
    let log_dir = std::env::temp_dir().join(format!("marketplace-bench-durable-{id}"));
    std::fs::create_dir_all(&log_dir).context("creating the log directory")?;
    println!(
        "durable bus: logs and the SQLite files in {}",
        log_dir.display()
    );
    let measured = async {
        let bus = durable_bus::run(services, id, &log_dir, levels, duration).await?;
        let api = run_api(
            services,
            id,
            &log_dir,
            levels,
            duration,
            rows_per_transaction,
        )
        .await?;
        Ok(DurableReport {
            level_seconds: duration.as_secs_f64(),
            rows_per_transaction,
            bus,
            api,
        })
    }
    .await;
    // The logs stay when something failed.
    if measured.is_ok() {
        let _ = std::fs::remove_dir_all(&log_dir);
    }
    measured
}

/// The API over HTTP on SQLite, then on PostgreSQL.
async fn run_api(
    services: &Services,
    id: &str,
    log_dir: &std::path::Path,
    levels: &[usize],
    duration: Duration,
    rows_per_transaction: usize,
) -> Result<Vec<DurableRun>> {
    let mut runs = Vec::new();

    let file: PathBuf = log_dir.join("bench.db");
    let url = format!("sqlite://{}", file.display());
    let sqlite = run_one(
        "SQLite",
        &url,
        log_dir,
        levels,
        duration,
        rows_per_transaction,
        {
            let file = file.clone();
            move || async move {
                // As the marketplace opens it: WAL, synchronous NORMAL, and one
                // writing connection (SQLite's one writer).
                let options = SqliteConnectOptions::new()
                    .filename(&file)
                    .busy_timeout(Duration::from_secs(5))
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal);
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await
                    .context("opening the SQLite file")?;
                Ok(Db::Sqlite(pool))
            }
        },
    )
    .await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    runs.push(sqlite?);

    let database = format!("bench_durable_{id}");
    let url = services.database_url(&database);
    let clients = levels.iter().copied().max().unwrap_or(1).min(64) as u32;
    let postgres = run_one(
        "PostgreSQL",
        &url,
        log_dir,
        levels,
        duration,
        rows_per_transaction,
        {
            let url = url.clone();
            move || async move {
                let pool = PgPoolOptions::new()
                    .max_connections(clients)
                    .connect(&url)
                    .await
                    .context("connecting to the durable bench database")?;
                Ok(Db::Postgres(pool))
            }
        },
    )
    .await;
    // Give the killed API a moment to close its connections.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Err(error) = drop_database(services, &database).await {
        eprintln!("cleanup: {error:#}");
    }
    runs.push(postgres?);
    Ok(runs)
}

/// Starts `marketplace serve` (default bus) on `url` and measures each level.
async fn run_one<F, Fut>(
    name: &'static str,
    url: &str,
    log_dir: &std::path::Path,
    levels: &[usize],
    duration: Duration,
    rows_per_transaction: usize,
    open: F,
) -> Result<DurableRun>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Db>>,
{
    let client = http_client(8)?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    // The default configuration: no --bus. No rate limit: the load comes
    // from one address.
    let args = [
        "serve",
        "--listen",
        &listen,
        "--rate-limit-per-second",
        "0",
        "--database-url",
        url,
    ];
    let log_name = format!("api-{}", name.to_lowercase());
    let mut api = start(&client, &args, log_dir, &log_name, &listen).await?;
    let api_url = format!("http://{listen}");
    let db = open().await?;
    let measured = measure(&api_url, &db, levels, duration, rows_per_transaction, name).await;
    db.close().await;
    let _ = api.kill().await;
    Ok(DurableRun {
        database: name,
        levels: measured?,
    })
}

async fn measure(
    api_url: &str,
    db: &Db,
    levels: &[usize],
    duration: Duration,
    rows_per_transaction: usize,
    name: &str,
) -> Result<Vec<DurableLevel>> {
    let client = http_client(8)?;
    let (seller, book) = (Uuid::new_v4(), Uuid::new_v4());
    seed(&client, api_url, seller, book).await?;
    // Warm up both paths.
    measure_api(api_url, seller, book, 4, Duration::from_secs(1)).await?;
    drained(db).await?;
    measure_raw(
        db,
        seller,
        book,
        4,
        Duration::from_secs(1),
        rows_per_transaction,
    )
    .await;
    db.delete_raw().await?;

    let mut measured = Vec::new();
    for &concurrency in levels {
        let api = measure_api(api_url, seller, book, concurrency, duration).await?;
        drained(db).await?;
        let raw = measure_raw(
            db,
            seller,
            book,
            concurrency,
            duration,
            rows_per_transaction,
        )
        .await;
        db.delete_raw().await?;
        let raw_rows_per_second = raw.rate * rows_per_transaction as f64;
        println!(
            "{name:<10} c={concurrency:>3}  API {:>8.0}/s p99 {:>7.2} ms ({} errors) | raw {:>8.0} rows/s ({} rows/tx, p99 {:>7.2} ms, {} errors) | API/raw {:.3}",
            api.rate,
            api.p99_ms,
            api.errors,
            raw_rows_per_second,
            rows_per_transaction,
            raw.p99_ms,
            raw.errors,
            api.rate / raw_rows_per_second,
        );
        measured.push(DurableLevel {
            api,
            raw,
            rows_per_transaction,
            raw_rows_per_second,
        });
    }
    Ok(measured)
}

/// Waits until the API's consumer has emptied `bus_messages` (twice in a
/// row, 200 ms apart: the events its handlers raise come through it too).
async fn drained(db: &Db) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut empty_before = false;
    loop {
        let queued = db.queued().await?;
        if queued == 0 && empty_before {
            return Ok(());
        }
        empty_before = queued == 0;
        if Instant::now() > deadline {
            bail!("the API's consumer did not drain bus_messages: {queued} rows left");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
