//! The durable bus in process, without HTTP: `concurrency` tokio tasks
//! calling `CommandBus::send` with a `CreateOffer` on a `DurableBus`, on
//! SQLite (a file opened as the marketplace opens it: WAL, `synchronous =
//! NORMAL`, one writing connection) and on PostgreSQL (its own database),
//! each migrated by the marketplace; beside it, with the same rows in
//! flight, raw batched inserts of the same envelope rows into
//! `bus_messages` of the same database: as many rows per transaction as the
//! bus's writer put in one group commit at that level (`G`), from
//! `concurrency / G` tasks (rounded up), so that the raw side, like the bus,
//! has at most `concurrency` rows waiting for a commit; and the in-memory
//! async bus's send.
//!
//! The bus's consumer is paused behind its circuit breaker (tripped before
//! the first send, with a probe that never answers), so only the accept
//! path is measured: a send returns once its row is committed, and nothing
//! else touches the table meanwhile. The table is emptied after each side.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use bus_core::{
    command_fn, AsyncBus, AsyncBusConfig, BreakerConfig, CircuitBreaker, CommandBusExt, DurableBus,
    DurableBusConfig, HandlerError, Handlers,
};
use marketplace::commands::create_offer::CreateOffer;
use marketplace::store::Database;
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::load::{closed_loop, offer_body};
use crate::phases::raw_inserts::{measure_raw, Db};
use crate::processes::{drop_database, Services};
use crate::stats::LevelResult;

/// One database's levels.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BusRun {
    /// `SQLite` or `PostgreSQL`.
    pub(crate) database: &'static str,
    pub(crate) levels: Vec<BusLevel>,
}

/// The durable bus and its raw reference at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BusLevel {
    /// Accepted sends (each one `CreateOffer` committed).
    pub(crate) bus: LevelResult,
    /// Messages per insert transaction of the bus's writer at this level.
    pub(crate) group_size: f64,
    /// Raw transactions, each of `raw_rows_per_transaction` rows.
    pub(crate) raw: LevelResult,
    /// `group_size` rounded: the rows of each raw transaction.
    pub(crate) raw_rows_per_transaction: usize,
    /// Raw tasks: the level's concurrency over the rows per transaction,
    /// rounded up (the same rows in flight as the bus).
    pub(crate) raw_tasks: usize,
    /// Raw rows inserted per second.
    pub(crate) raw_rows_per_second: f64,
}

/// The in-process measurements: the durable bus on each database, and the
/// in-memory async bus.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BusReport {
    pub(crate) runs: Vec<BusRun>,
    /// `send` on the in-memory async bus (a no-op handler consuming).
    pub(crate) memory: Vec<LevelResult>,
}

/// The name of the PostgreSQL database of run `id`.
pub(crate) fn database_name(id: &str) -> String {
    format!("bench_durable_bus_{id}")
}

/// Measures the durable bus on SQLite, then on PostgreSQL, then the
/// in-memory async bus.
pub(crate) async fn run(
    services: &Services,
    id: &str,
    dir: &Path,
    levels: &[usize],
    duration: Duration,
) -> Result<BusReport> {
    let mut runs = Vec::new();

    let file = dir.join("bus.db");
    let url = format!("sqlite://{}", file.display());
    let sqlite = run_one("SQLite", &url, levels, duration).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
    runs.push(sqlite?);

    let database = database_name(id);
    let postgres = run_one(
        "PostgreSQL",
        &services.database_url(&database),
        levels,
        duration,
    )
    .await;
    if let Err(error) = drop_database(services, &database).await {
        eprintln!("cleanup: {error:#}");
    }
    runs.push(postgres?);

    let mut memory = Vec::new();
    for &concurrency in levels {
        let level = measure_memory(concurrency, duration).await?;
        println!(
            "{:<10} c={concurrency:>3}  in-memory async bus {:>9.0}/s p50 {:>6.3} ms p99 {:>6.3} ms ({} errors)",
            "memory", level.rate, level.p50_ms, level.p99_ms, level.errors,
        );
        memory.push(level);
    }
    Ok(BusReport { runs, memory })
}

/// Handlers with a no-op `CreateOffer` handler.
fn handlers() -> Result<Handlers> {
    Handlers::builder()
        .command::<CreateOffer, _>(command_fn(|_: CreateOffer, _| async {
            Ok::<(), HandlerError>(())
        }))
        .build()
        .context("registering the handler")
}

/// Opens and migrates `url` as the marketplace does, starts a durable bus
/// on it with its consumer paused, and measures each level.
async fn run_one(
    name: &'static str,
    url: &str,
    levels: &[usize],
    duration: Duration,
) -> Result<BusRun> {
    // The marketplace's default pool size (`--db-max-connections`).
    let database = Database::connect(url, 20).await?;
    let clients = levels.iter().copied().max().unwrap_or(1).min(64) as u32;
    let raw_db = match &database {
        Database::Sqlite(store) => Db::Sqlite(store.writer().clone()),
        Database::Postgres(_) => Db::Postgres(
            PgPoolOptions::new()
                .max_connections(clients)
                .connect(url)
                .await
                .context("connecting the raw inserts")?,
        ),
    };
    // Tripped before the first send; the probe never answers, so the
    // consumer never claims.
    let breaker = CircuitBreaker::with_probe(BreakerConfig::default(), || async {
        Err("paused by the benchmark: only sends are measured".to_owned())
    });
    breaker.trip("paused by the benchmark: only sends are measured");
    let config = DurableBusConfig {
        drain_timeout: Duration::from_millis(100),
        ..DurableBusConfig::default()
    };
    let builder = match &database {
        Database::Sqlite(store) => DurableBus::sqlite(store.writer().clone(), handlers()?),
        Database::Postgres(pool) => DurableBus::postgres(pool.clone(), handlers()?),
    };
    let bus = builder.config(config).breaker(breaker).start();
    let measured = measure(name, &bus, &raw_db, levels, duration).await;
    bus.shutdown().await;
    raw_db.close().await;
    database.close().await;
    Ok(BusRun {
        database: name,
        levels: measured?,
    })
}

async fn measure(
    name: &str,
    bus: &DurableBus,
    db: &Db,
    levels: &[usize],
    duration: Duration,
) -> Result<Vec<BusLevel>> {
    let (seller, book) = (Uuid::new_v4(), Uuid::new_v4());
    // Warm up both paths.
    measure_bus(bus, seller, book, 4, Duration::from_secs(1)).await;
    db.clear().await?;
    measure_raw(db, seller, book, 4, Duration::from_secs(1), 4).await;
    db.clear().await?;

    let mut measured = Vec::new();
    for &concurrency in levels {
        let before = bus.group_commits();
        let sent = measure_bus(bus, seller, book, concurrency, duration).await;
        let after = bus.group_commits();
        db.clear().await?;
        let transactions = after.transactions.saturating_sub(before.transactions);
        let messages = after.messages.saturating_sub(before.messages);
        let group_size = messages as f64 / transactions.max(1) as f64;
        let rows = (group_size.round() as usize).max(1);
        let raw_tasks = concurrency.div_ceil(rows);
        let raw = measure_raw(db, seller, book, raw_tasks, duration, rows).await;
        db.clear().await?;
        let raw_rows_per_second = raw.rate * rows as f64;
        println!(
            "{name:<10} c={concurrency:>3}  bus {:>8.0}/s p50 {:>6.2} p99 {:>6.2} ms ({} errors), {group_size:.1} per commit | raw {:>8.0} rows/s ({raw_tasks} tasks x {rows} rows/tx, p99 {:>6.2} ms, {} errors) | bus/raw {:.3}",
            sent.rate,
            sent.p50_ms,
            sent.p99_ms,
            sent.errors,
            raw_rows_per_second,
            raw.p99_ms,
            raw.errors,
            sent.rate / raw_rows_per_second,
        );
        measured.push(BusLevel {
            bus: sent,
            group_size,
            raw,
            raw_rows_per_transaction: rows,
            raw_tasks,
            raw_rows_per_second,
        });
    }
    Ok(measured)
}

/// `concurrency` tasks sending `CreateOffer`s on `bus` for `duration`.
async fn measure_bus(
    bus: &DurableBus,
    seller: Uuid,
    book: Uuid,
    concurrency: usize,
    duration: Duration,
) -> LevelResult {
    let bus = bus.clone();
    closed_loop(concurrency, duration, move |task, n| {
        let bus = bus.clone();
        async move {
            let offer = offer(seller, book, task, n)?;
            bus.send(&offer).await?;
            Ok(())
        }
    })
    .await
}

/// `concurrency` tasks sending `CreateOffer`s on an in-memory async bus
/// whose no-op handler consumes them meanwhile.
async fn measure_memory(concurrency: usize, duration: Duration) -> Result<LevelResult> {
    let config = AsyncBusConfig {
        capacity: 1 << 20,
        ..AsyncBusConfig::default()
    };
    let bus = AsyncBus::start(handlers()?, config);
    let (seller, book) = (Uuid::new_v4(), Uuid::new_v4());
    let sender = bus.clone();
    let level = closed_loop(concurrency, duration, move |task, n| {
        let bus = sender.clone();
        async move {
            let offer = offer(seller, book, task, n)?;
            bus.send(&offer).await?;
            Ok(())
        }
    })
    .await;
    bus.shutdown().await;
    Ok(level)
}

/// The `CreateOffer` number `n` of task `task`, as the raw reference builds
/// it.
fn offer(seller: Uuid, book: Uuid, task: usize, n: u64) -> Result<CreateOffer> {
    let body = offer_body(Uuid::new_v4(), book, seller, n * 1_000 + task as u64);
    Ok(serde_json::from_value(body)?)
}
