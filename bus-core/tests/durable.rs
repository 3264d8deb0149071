//! The durable bus on both databases: PostgreSQL (a fresh database from
//! `#[sqlx::test]` at `DATABASE_URL`) and an SQLite file of its own.
//!
//! Each handler records what it applied in an `applied` table of the same
//! database, so the tests assert what a user of the data would see.

use std::{future::Future, sync::Arc, time::Duration};

use bus_core::{
    command_fn,
    dead_letter_ops::DeadLetterSelector,
    durable::{postgres, sqlite},
    event_fn, BatchConfig, BatchHandler, BatchOutcome, CommandBusExt, DeadLetterTable, DurableBus,
    DurableBusConfig, Envelope, EventBusExt, HandlerError, Handlers, HandlersBuilder, Message,
    MessageContext, PausedQueues, Receipt, RetryPolicy, DEAD_LETTERS_POSTGRES_SCHEMA,
    DEAD_LETTERS_SQLITE_SCHEMA,
};
use serde::{Deserialize, Serialize};
use sqlx::{sqlite::SqliteConnectOptions, PgPool, SqlitePool};
use tokio::sync::Notify;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ship {
    parcel: u32,
}
impl Message for Ship {
    const NAME: &'static str = "test.Ship";
}
impl bus_core::Command for Ship {}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Shipped {
    parcel: u32,
}
impl Message for Shipped {
    const NAME: &'static str = "test.Shipped";
}
impl bus_core::Event for Shipped {}

/// The database under test, with its `applied` table.
#[derive(Clone)]
enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool, String),
}

impl Db {
    async fn postgres(pool: PgPool) -> Self {
        for schema in [
            postgres::SCHEMA,
            DEAD_LETTERS_POSTGRES_SCHEMA,
            "CREATE TABLE applied (parcel BIGINT NOT NULL, label TEXT NOT NULL)",
        ] {
            sqlx::raw_sql(schema).execute(&pool).await.unwrap();
        }
        Db::Postgres(pool)
    }

    async fn sqlite() -> Self {
        let path = std::env::temp_dir().join(format!(
            "bus-core-durable-{}.db",
            uuid::Uuid::new_v4().simple()
        ));
        let url = format!("sqlite://{}", path.display());
        let pool = Self::open_sqlite(&url).await;
        for schema in [
            sqlite::SCHEMA,
            DEAD_LETTERS_SQLITE_SCHEMA,
            "CREATE TABLE applied (parcel INTEGER NOT NULL, label TEXT NOT NULL)",
        ] {
            sqlx::raw_sql(schema).execute(&pool).await.unwrap();
        }
        Db::Sqlite(pool, url)
    }

    async fn open_sqlite(url: &str) -> SqlitePool {
        let options: SqliteConnectOptions = url.parse().unwrap();
        sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.create_if_missing(true))
            .await
            .unwrap()
    }

    /// Another connection to the same database, as a second process has.
    async fn reopen(&self) -> Self {
        match self {
            Db::Postgres(pool) => Db::Postgres(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(4)
                    .connect_with(pool.connect_options().as_ref().clone())
                    .await
                    .unwrap(),
            ),
            Db::Sqlite(_, url) => Db::Sqlite(Self::open_sqlite(url).await, url.clone()),
        }
    }

    fn bus(&self, handlers: Handlers, config: DurableBusConfig) -> DurableBus {
        match self {
            Db::Postgres(pool) => DurableBus::postgres(pool.clone(), handlers),
            Db::Sqlite(pool, _) => DurableBus::sqlite(pool.clone(), handlers),
        }
        .config(config)
        .start()
    }

    async fn record(&self, parcel: u32, label: &str) -> Result<(), HandlerError> {
        match self {
            Db::Postgres(pool) => {
                sqlx::query("INSERT INTO applied (parcel, label) VALUES ($1, $2)")
                    .bind(i64::from(parcel))
                    .bind(label)
                    .execute(pool)
                    .await?;
            }
            Db::Sqlite(pool, _) => {
                sqlx::query("INSERT INTO applied (parcel, label) VALUES (?1, ?2)")
                    .bind(i64::from(parcel))
                    .bind(label)
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Records every parcel in one transaction, or none: a parcel the
    /// table's check refuses aborts the whole transaction.
    async fn record_all(&self, parcels: &[u32], label: &str) -> Result<(), HandlerError> {
        match self {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                for parcel in parcels {
                    sqlx::query("INSERT INTO shipments (parcel, label) VALUES ($1, $2)")
                        .bind(i64::from(*parcel))
                        .bind(label)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            Db::Sqlite(pool, _) => {
                let mut tx = pool.begin().await?;
                for parcel in parcels {
                    sqlx::query("INSERT INTO shipments (parcel, label) VALUES (?1, ?2)")
                        .bind(i64::from(*parcel))
                        .bind(label)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Records every parcel and the `receipts` of their messages in one
    /// transaction: an effect that is not idempotent (a repeat adds a row
    /// and bumps the counter), acknowledged with it.
    async fn record_with_receipts(
        &self,
        parcels: &[u32],
        label: &str,
        receipts: Vec<Receipt>,
    ) -> Result<(), HandlerError> {
        match self {
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                for parcel in parcels {
                    sqlx::query("INSERT INTO applied (parcel, label) VALUES ($1, $2)")
                        .bind(i64::from(*parcel))
                        .bind(label)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query("UPDATE counter SET n = n + $1")
                    .bind(parcels.len() as i64)
                    .execute(&mut *tx)
                    .await?;
                postgres::record_receipts(&mut tx, receipts).await?;
                tx.commit().await?;
            }
            Db::Sqlite(pool, _) => {
                let mut tx = pool.begin().await?;
                for parcel in parcels {
                    sqlx::query("INSERT INTO applied (parcel, label) VALUES (?1, ?2)")
                        .bind(i64::from(*parcel))
                        .bind(label)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query("UPDATE counter SET n = n + ?1")
                    .bind(parcels.len() as i64)
                    .execute(&mut *tx)
                    .await?;
                sqlite::record_receipts(&mut tx, receipts).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Creates the one-row `counter` table the receipt tests bump.
    async fn create_counter(&self) {
        let sql = "CREATE TABLE counter (n BIGINT NOT NULL); INSERT INTO counter (n) VALUES (0)";
        match self {
            Db::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
            Db::Sqlite(pool, _) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        }
        .unwrap();
    }

    /// Inserts a queue row and its receipt, as a handler's committed
    /// transaction leaves them when its process dies before settling.
    async fn insert_receipted_row(&self, envelope: &Envelope) {
        self.insert_row(envelope).await;
        let sql = "INSERT INTO bus_receipts (message_row) SELECT max(id) FROM bus_messages";
        match self {
            Db::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
            Db::Sqlite(pool, _) => sqlx::query(sql).execute(pool).await.map(drop),
        }
        .unwrap();
    }

    /// Inserts a queue row as a sender (another process) commits it.
    async fn insert_row(&self, envelope: &Envelope) {
        let text = serde_json::to_string(envelope).unwrap();
        match self {
            Db::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO bus_messages (message_id, message_type, envelope)
                     VALUES ($1, $2, $3::jsonb)",
                )
                .bind(envelope.id)
                .bind(&envelope.message_type)
                .bind(text)
                .execute(pool)
                .await
                .unwrap();
            }
            Db::Sqlite(pool, _) => {
                sqlx::query(
                    "INSERT INTO bus_messages (message_id, message_type, envelope, not_before)
                     VALUES (?1, ?2, ?3, 0)",
                )
                .bind(envelope.id.to_string())
                .bind(&envelope.message_type)
                .bind(text)
                .execute(pool)
                .await
                .unwrap();
            }
        }
    }

    async fn count(&self, sql: &str) -> i64 {
        match self {
            Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
            Db::Sqlite(pool, _) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        }
    }

    /// Deletes an SQLite file.
    async fn remove(self) {
        if let Db::Sqlite(pool, url) = self {
            pool.close().await;
            let path = url.trim_start_matches("sqlite://");
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
        }
    }

    fn dead_letters(&self) -> DeadLetterTable {
        match self {
            Db::Postgres(pool) => DeadLetterTable::Postgres(pool.clone()),
            Db::Sqlite(pool, _) => DeadLetterTable::Sqlite(pool.clone()),
        }
    }
}

fn fast() -> DurableBusConfig {
    DurableBusConfig {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(20),
            multiplier: 2.0,
            max_backoff: Duration::from_millis(100),
        },
        poll_interval: Duration::from_millis(200),
        ..DurableBusConfig::default()
    }
}

/// Waits until `sql` counts `expected`, within 15 s.
async fn eventually(db: &Db, sql: &str, expected: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let found = db.count(sql).await;
        if found == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sql}: {found}, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Handlers recording each `Ship` (and each `Shipped`, per subscriber).
fn recording(db: &Db) -> HandlersBuilder {
    let (ships, audit, mail) = (db.clone(), db.clone(), db.clone());
    Handlers::builder()
        .command(command_fn(move |ship: Ship, _: MessageContext| {
            let db = ships.clone();
            async move { db.record(ship.parcel, "ship").await }
        }))
        .subscribe::<Shipped, _>(
            "audit",
            event_fn(move |shipped: Shipped, _: MessageContext| {
                let db = audit.clone();
                async move { db.record(shipped.parcel, "audit").await }
            }),
        )
        .subscribe::<Shipped, _>(
            "mail",
            event_fn(move |shipped: Shipped, _: MessageContext| {
                let db = mail.clone();
                async move { db.record(shipped.parcel, "mail").await }
            }),
        )
}

/// Runs `scenario` on a fresh PostgreSQL database and on a fresh SQLite file.
macro_rules! on_both_databases {
    ($name:ident, $scenario:expr) => {
        mod $name {
            use super::*;

            #[sqlx::test]
            async fn on_postgres(pool: PgPool) {
                let scenario = $scenario;
                scenario(Db::postgres(pool).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                let scenario = $scenario;
                let db = Db::sqlite().await;
                scenario(db.clone()).await;
                db.remove().await;
            }
        }
    };
}

fn boxed<F, Fut>(f: F) -> impl Fn(Db) -> std::pin::Pin<Box<dyn Future<Output = ()>>>
where
    F: Fn(Db) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    move |db| Box::pin(f(db))
}

on_both_databases!(
    a_sent_command_is_a_row_until_its_handler_applied_it,
    boxed(|db: Db| async move {
        let bus = db.bus(recording(&db).build().unwrap(), fast());
        for parcel in 0..20 {
            bus.send(&Ship { parcel }).await.unwrap();
        }
        eventually(&db, "SELECT count(*) FROM applied WHERE label = 'ship'", 20).await;
        eventually(&db, "SELECT count(*) FROM bus_messages", 0).await;
        bus.shutdown().await;
        assert!(bus.send(&Ship { parcel: 99 }).await.is_err());
    })
);

on_both_databases!(
    a_published_event_reaches_each_subscriber_once,
    boxed(|db: Db| async move {
        let bus = db.bus(recording(&db).build().unwrap(), fast());
        bus.publish(&Shipped { parcel: 7 }).await.unwrap();
        eventually(&db, "SELECT count(*) FROM applied WHERE parcel = 7", 2).await;
        eventually(&db, "SELECT count(*) FROM bus_messages", 0).await;
        assert_eq!(
            db.count("SELECT count(*) FROM applied WHERE label IN ('audit', 'mail')")
                .await,
            2
        );
        bus.shutdown().await;
    })
);

on_both_databases!(
    a_retryable_failure_is_retried_then_applied,
    boxed(|db: Db| async move {
        let tries = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let handlers = {
            let (db, tries) = (db.clone(), tries.clone());
            Handlers::builder()
                .command(command_fn(move |ship: Ship, context: MessageContext| {
                    let (db, tries) = (db.clone(), tries.clone());
                    async move {
                        tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        if context.attempt() < 3 {
                            return Err(HandlerError::retryable("warehouse not open yet"));
                        }
                        db.record(ship.parcel, "ship").await
                    }
                }))
                .build()
                .unwrap()
        };
        let bus = db.bus(handlers, fast());
        bus.send(&Ship { parcel: 1 }).await.unwrap();
        eventually(&db, "SELECT count(*) FROM applied", 1).await;
        eventually(&db, "SELECT count(*) FROM bus_messages", 0).await;
        assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(db.count("SELECT count(*) FROM bus_dead_letters").await, 0);
        bus.shutdown().await;
    })
);

on_both_databases!(
    a_poison_message_is_dead_lettered_with_its_reason_where_the_tooling_reads,
    boxed(|db: Db| async move {
        let handlers = Handlers::builder()
            .command(command_fn(|ship: Ship, _: MessageContext| async move {
                Err::<(), _>(HandlerError::permanent(format!(
                    "parcel {} has no address",
                    ship.parcel
                )))
            }))
            .build()
            .unwrap();
        let bus = db.bus(handlers, fast());
        bus.send(&Ship { parcel: 5 }).await.unwrap();
        eventually(&db, "SELECT count(*) FROM bus_dead_letters", 1).await;
        eventually(&db, "SELECT count(*) FROM bus_messages", 0).await;
        let found = db
            .dead_letters()
            .find(&DeadLetterSelector::default())
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].queue, "command.test.Ship");
        assert_eq!(found[0].reason, "parcel 5 has no address");
        assert_eq!(found[0].attempts, Some(1));
        assert_eq!(found[0].payload, Some(serde_json::json!({ "parcel": 5 })));
        bus.shutdown().await;
    })
);

on_both_databases!(
    a_retryable_failure_that_never_passes_is_dead_lettered_after_the_last_attempt,
    boxed(|db: Db| async move {
        let handlers = Handlers::builder()
            .command(command_fn(|_: Ship, _: MessageContext| async move {
                Err::<(), _>(HandlerError::retryable("warehouse closed"))
            }))
            .build()
            .unwrap();
        let bus = db.bus(handlers, fast());
        bus.send(&Ship { parcel: 2 }).await.unwrap();
        eventually(&db, "SELECT count(*) FROM bus_dead_letters", 1).await;
        let found = db
            .dead_letters()
            .find(&DeadLetterSelector::default())
            .await
            .unwrap();
        assert_eq!(found[0].reason, "warehouse closed");
        assert_eq!(found[0].attempts, Some(3));
        bus.shutdown().await;
    })
);

on_both_databases!(
    a_consumer_that_died_mid_handler_leaves_its_rows_to_the_next_one,
    boxed(|db: Db| async move {
        // The first process: its handler never finishes; it dies with the
        // runtime it ran on, mid-handler, as a process killed would. Its
        // connections are its own, opened on its runtime.
        let entered = Arc::new(Notify::new());
        let crashed = {
            let (db, entered) = (db.clone(), entered.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Runtime::new().unwrap();
                runtime.block_on(async move {
                    let first = db.reopen().await;
                    let handlers = Handlers::builder()
                        .command(command_fn(move |_: Ship, _: MessageContext| {
                            let entered = entered.clone();
                            async move {
                                entered.notify_one();
                                std::future::pending::<Result<(), HandlerError>>().await
                            }
                        }))
                        .build()
                        .unwrap();
                    let bus = first.bus(handlers, fast());
                    for parcel in 0..5 {
                        bus.send(&Ship { parcel }).await.unwrap();
                    }
                    // Dropping the handle stops nothing: the consumer
                    // keeps running, its handlers pending, until the
                    // runtime goes down with everything it holds.
                });
                runtime
            })
        };
        entered.notified().await;
        tokio::task::spawn_blocking(move || crashed.join().unwrap().shutdown_background())
            .await
            .unwrap();
        assert_eq!(db.count("SELECT count(*) FROM bus_messages").await, 5);
        // The next process applies every row the first one left.
        let bus = db.bus(recording(&db).build().unwrap(), fast());
        eventually(&db, "SELECT count(*) FROM applied WHERE label = 'ship'", 5).await;
        eventually(&db, "SELECT count(*) FROM bus_messages", 0).await;
        bus.shutdown().await;
    })
);

/// Two processes consuming one PostgreSQL table never apply a message twice.
#[sqlx::test]
async fn two_consumers_on_postgres_apply_each_message_once(pool: PgPool) {
    let db = Db::postgres(pool).await;
    let other = db.reopen().await;
    let first = db.bus(recording(&db).build().unwrap(), fast());
    let second = other.bus(recording(&other).build().unwrap(), fast());
    let sends = (0..400u32).map(|parcel| {
        let bus = if parcel % 2 == 0 { &first } else { &second };
        async move { bus.send(&Ship { parcel }).await }
    });
    for sent in futures::future::join_all(sends).await {
        sent.unwrap();
    }
    eventually(&db, "SELECT count(*) FROM applied", 400).await;
    eventually(&db, "SELECT count(*) FROM bus_messages", 0).await;
    assert_eq!(
        db.count("SELECT count(DISTINCT parcel) FROM applied").await,
        400,
        "no parcel shipped twice"
    );
    first.shutdown().await;
    second.shutdown().await;
}

/// Concurrent sends share commits: all of them are committed when `send`
/// returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_concurrent_send_is_committed_when_it_returns() {
    let db = Db::sqlite().await;
    let handlers = Handlers::builder()
        .command(command_fn(|_: Ship, _: MessageContext| async move {
            std::future::pending::<Result<(), HandlerError>>().await
        }))
        .build()
        .unwrap();
    let bus = db.bus(handlers, fast());
    let sends = (0..300u32).map(|parcel| {
        let bus = &bus;
        async move { bus.send(&Ship { parcel }).await }
    });
    for sent in futures::future::join_all(sends).await {
        sent.unwrap();
    }
    assert_eq!(db.count("SELECT count(*) FROM bus_messages").await, 300);
    db.remove().await;
}

/// Parcel 13 breaks the `shipments` check: a poison message the database
/// itself refuses, aborting the whole transaction it is in.
const POISON: u32 = 13;

/// Ships a batch in one transaction; records the size of every call.
#[derive(Clone)]
struct ShipAll {
    db: Db,
    calls: Arc<std::sync::Mutex<Vec<usize>>>,
}

impl BatchHandler<Ship> for ShipAll {
    async fn handle_batch(&self, batch: &[(Ship, MessageContext)]) -> BatchOutcome {
        self.calls.lock().unwrap().push(batch.len());
        let parcels: Vec<u32> = batch.iter().map(|(ship, _)| ship.parcel).collect();
        self.db.record_all(&parcels, "batch").await?;
        Ok(batch.iter().map(|_| Ok(())).collect())
    }
}

on_both_databases!(
    a_poison_message_in_the_middle_of_a_claimed_batch_is_dead_lettered_alone,
    boxed(|db: Db| async move {
        let schema = "CREATE TABLE shipments (
            parcel BIGINT NOT NULL PRIMARY KEY CHECK (parcel <> 13),
            label TEXT NOT NULL
        )";
        match &db {
            Db::Postgres(pool) => sqlx::raw_sql(schema).execute(pool).await.map(drop),
            Db::Sqlite(pool, _) => sqlx::raw_sql(schema).execute(pool).await.map(drop),
        }
        .unwrap();
        // The rows are in the table before the consumer starts, so its
        // first claim takes them together.
        let parcels: Vec<u32> = (10..=16).collect();
        for parcel in &parcels {
            db.insert_row(&Envelope::new(&Ship { parcel: *parcel }).unwrap())
                .await;
        }
        let handler = ShipAll {
            db: db.clone(),
            calls: Arc::default(),
        };
        let handlers = Handlers::builder()
            .command_batch::<Ship, _>(
                handler.clone(),
                BatchConfig::new(50, Duration::from_millis(5)),
            )
            .build()
            .unwrap();
        let bus = db.bus(handlers, fast());
        eventually(&db, "SELECT count(*) FROM bus_messages", 0).await;
        bus.shutdown().await;

        let applied = parcels.len() as i64 - 1;
        assert_eq!(
            db.count("SELECT count(*) FROM shipments").await,
            applied,
            "every neighbour applied"
        );
        assert_eq!(
            db.count("SELECT count(*) FROM shipments WHERE parcel = 13")
                .await,
            0
        );
        let found = db
            .dead_letters()
            .find(&DeadLetterSelector::default())
            .await
            .unwrap();
        assert_eq!(
            found.len(),
            1,
            "only the poison is dead-lettered: {found:?}"
        );
        assert_eq!(
            found[0].payload,
            Some(serde_json::json!({ "parcel": POISON }))
        );
        assert!(
            found[0].reason.to_lowercase().contains("check"),
            "the dead letter says why: {}",
            found[0].reason
        );
        assert_eq!(
            found[0].attempts,
            Some(1),
            "a constraint violation is not retried"
        );
        assert_eq!(
            *handler.calls.lock().unwrap(),
            [vec![parcels.len()], vec![1; parcels.len()]].concat(),
            "one batch of every claimed row, then each message alone"
        );
    })
);

on_both_databases!(
    a_paused_queue_keeps_its_rows_until_it_is_resumed,
    boxed(|db: Db| async move {
        let paused = match &db {
            Db::Postgres(pool) => PausedQueues::Postgres(pool.clone()),
            Db::Sqlite(pool, _) => PausedQueues::Sqlite(pool.clone()),
        };
        let ships = DurableBus::queue_name(Ship::NAME, None);
        assert_eq!(ships, "command.test.Ship");
        assert!(paused.pause(&ships, "an operator").await.unwrap());
        let bus = db.bus(recording(&db).build().unwrap(), fast());
        assert!(bus.queues().contains(&ships));
        for parcel in 0..3 {
            bus.send(&Ship { parcel }).await.unwrap();
        }
        // Sent after the commands, in a queue still running: once it is
        // applied, the consumer has claimed past the paused rows.
        bus.publish(&Shipped { parcel: 100 }).await.unwrap();
        eventually(&db, "SELECT count(*) FROM applied WHERE parcel = 100", 2).await;
        assert_eq!(
            db.count("SELECT count(*) FROM applied WHERE label = 'ship'")
                .await,
            0,
            "nothing of the paused queue applied"
        );
        // The event's rows are deleted just after their handlers commit:
        // awaited, until only the paused queue's rows are left.
        eventually(&db, "SELECT count(*) FROM bus_messages", 3).await;

        assert!(paused.resume(&ships).await.unwrap());
        eventually(&db, "SELECT count(*) FROM applied WHERE label = 'ship'", 3).await;
        eventually(&db, "SELECT count(*) FROM bus_messages", 0).await;
        bus.shutdown().await;
    })
);

/// Counts its calls, and records each parcel with its receipt in one
/// transaction.
#[derive(Clone)]
struct ShipWithReceipt {
    db: Db,
    calls: Arc<std::sync::atomic::AtomicU32>,
}

impl ShipWithReceipt {
    fn new(db: &Db) -> Self {
        Self {
            db: db.clone(),
            calls: Arc::default(),
        }
    }

    fn calls(&self) -> u32 {
        self.calls.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl bus_core::CommandHandler<Ship> for ShipWithReceipt {
    async fn handle(&self, ship: Ship, context: MessageContext) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.db
            .record_with_receipts(
                &[ship.parcel],
                "ship",
                context.durable_receipt().into_iter().collect(),
            )
            .await
    }
}

impl BatchHandler<Ship> for ShipWithReceipt {
    async fn handle_batch(&self, batch: &[(Ship, MessageContext)]) -> BatchOutcome {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let parcels: Vec<u32> = batch.iter().map(|(ship, _)| ship.parcel).collect();
        let receipts = batch
            .iter()
            .filter_map(|(_, context)| context.durable_receipt())
            .collect();
        self.db
            .record_with_receipts(&parcels, "batch", receipts)
            .await?;
        Ok(batch.iter().map(|_| Ok(())).collect())
    }
}

on_both_databases!(
    a_message_whose_receipt_was_committed_before_a_crash_is_not_handled_again,
    boxed(|db: Db| async move {
        db.create_counter().await;
        // What a process that died between its handler's commit and its
        // settlement leaves: the row, and the receipt the handler's
        // transaction recorded with its effect. Then one row never run.
        db.insert_receipted_row(&Envelope::new(&Ship { parcel: 1 }).unwrap())
            .await;
        db.insert_row(&Envelope::new(&Ship { parcel: 2 }).unwrap())
            .await;
        let handler = ShipWithReceipt::new(&db);
        let handlers = Handlers::builder()
            .command::<Ship, _>(handler.clone())
            .build()
            .unwrap();
        let bus = db.bus(handlers, fast());
        eventually(&db, "SELECT count(*) FROM bus_messages", 0).await;
        bus.shutdown().await;

        assert_eq!(handler.calls(), 1, "only the message never handled runs");
        assert_eq!(db.count("SELECT n FROM counter").await, 1);
        assert_eq!(
            db.count("SELECT count(*) FROM applied WHERE parcel = 1")
                .await,
            0,
            "the handled message is not applied a second time"
        );
        assert_eq!(db.count("SELECT count(*) FROM bus_receipts").await, 0);
        assert_eq!(db.count("SELECT count(*) FROM bus_dead_letters").await, 0);
    })
);

on_both_databases!(
    a_handler_recording_its_receipt_applies_every_message_exactly_once,
    boxed(|db: Db| async move {
        db.create_counter().await;
        let handler = ShipWithReceipt::new(&db);
        let handlers = Handlers::builder()
            .command::<Ship, _>(handler.clone())
            .build()
            .unwrap();
        let bus = db.bus(handlers, fast());
        let sends = (0..200u32).map(|parcel| {
            let bus = &bus;
            async move { bus.send(&Ship { parcel }).await }
        });
        for sent in futures::future::join_all(sends).await {
            sent.unwrap();
        }
        eventually(&db, "SELECT count(*) FROM bus_messages", 0).await;
        bus.shutdown().await;

        assert_eq!(db.count("SELECT n FROM counter").await, 200);
        assert_eq!(
            db.count("SELECT count(DISTINCT parcel) FROM applied").await,
            200
        );
        assert_eq!(db.count("SELECT count(*) FROM applied").await, 200);
        assert_eq!(handler.calls(), 200);
        assert_eq!(db.count("SELECT count(*) FROM bus_receipts").await, 0);
    })
);

on_both_databases!(
    a_batch_handler_recording_the_receipts_of_its_batch_applies_every_message_exactly_once,
    boxed(|db: Db| async move {
        db.create_counter().await;
        // Rows already handled before a crash are among the claimed ones.
        for parcel in 0..5u32 {
            db.insert_receipted_row(&Envelope::new(&Ship { parcel }).unwrap())
                .await;
        }
        for parcel in 5..60u32 {
            db.insert_row(&Envelope::new(&Ship { parcel }).unwrap())
                .await;
        }
        let handler = ShipWithReceipt::new(&db);
        let handlers = Handlers::builder()
            .command_batch::<Ship, _>(
                handler.clone(),
                BatchConfig::new(20, Duration::from_millis(5)),
            )
            .build()
            .unwrap();
        let bus = db.bus(handlers, fast());
        eventually(&db, "SELECT count(*) FROM bus_messages", 0).await;
        bus.shutdown().await;

        assert_eq!(db.count("SELECT n FROM counter").await, 55);
        assert_eq!(db.count("SELECT count(*) FROM applied").await, 55);
        assert_eq!(
            db.count("SELECT count(*) FROM applied WHERE parcel < 5")
                .await,
            0,
            "messages handled before the crash are not applied again"
        );
        assert_eq!(
            db.count("SELECT count(DISTINCT parcel) FROM applied").await,
            55
        );
        assert!(
            handler.calls() < 55,
            "the rows ran in batches: {}",
            handler.calls()
        );
        assert_eq!(db.count("SELECT count(*) FROM bus_receipts").await, 0);
    })
);

on_both_databases!(
    a_handler_that_fails_after_committing_its_receipt_is_acknowledged_not_retried,
    boxed(|db: Db| async move {
        db.create_counter().await;
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let handlers = {
            let (db, calls) = (db.clone(), calls.clone());
            Handlers::builder()
                .command(command_fn(move |ship: Ship, context: MessageContext| {
                    let (db, calls) = (db.clone(), calls.clone());
                    async move {
                        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let receipts = context.durable_receipt().into_iter().collect();
                        db.record_with_receipts(&[ship.parcel], "ship", receipts)
                            .await?;
                        Err(HandlerError::permanent("failed after its commit"))
                    }
                }))
                .build()
                .unwrap()
        };
        let bus = db.bus(handlers, fast());
        bus.send(&Ship { parcel: 3 }).await.unwrap();
        eventually(&db, "SELECT count(*) FROM bus_messages", 0).await;
        bus.shutdown().await;

        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(db.count("SELECT n FROM counter").await, 1);
        assert_eq!(
            db.count("SELECT count(*) FROM bus_dead_letters").await,
            0,
            "its effect is committed: the message is done, not dead-lettered"
        );
        assert_eq!(db.count("SELECT count(*) FROM bus_receipts").await, 0);
    })
);

/// A consumer that lost its claim (its connection closed while its handler
/// still ran) cannot commit the effect of a message another consumer
/// already handled: its receipt fails, and its transaction rolls back.
#[sqlx::test]
async fn a_receipt_for_a_message_already_handled_fails(pool: PgPool) {
    let db = Db::postgres(pool.clone()).await;
    db.insert_row(&Envelope::new(&Ship { parcel: 1 }).unwrap())
        .await;
    let row: i64 = sqlx::query_scalar("SELECT id FROM bus_messages")
        .fetch_one(&pool)
        .await
        .unwrap();
    // The handler of the consumer holding the claim records it.
    sqlx::query("INSERT INTO bus_receipts (message_row) VALUES ($1)")
        .bind(row)
        .execute(&pool)
        .await
        .unwrap();
    // A late one (its claim lost) tries again: refused.
    let again = sqlx::query("INSERT INTO bus_receipts (message_row) VALUES ($1)")
        .bind(row)
        .execute(&pool)
        .await;
    assert!(again.is_err(), "a second receipt of one message is refused");
    // Once the row is settled (deleted with its receipt), still refused.
    sqlx::query("DELETE FROM bus_messages WHERE id = $1")
        .bind(row)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(db.count("SELECT count(*) FROM bus_receipts").await, 0);
    let gone = sqlx::query("INSERT INTO bus_receipts (message_row) VALUES ($1)")
        .bind(row)
        .execute(&pool)
        .await;
    assert!(gone.is_err(), "no receipt for a row already settled");
}
