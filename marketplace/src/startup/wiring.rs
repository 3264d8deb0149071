//! What the API and the worker are both built from.

use std::sync::Arc;

use bus_core::{
    outbox::{OutboxRelay, OutboxWaker, RelayConfig},
    BatchConfig, BreakerConfig, CircuitBreaker, DatabaseDeadLetters, DeadLetter, DeadLetterSink,
    DurableBus, DurableBusConfig, EventBus, Handlers, InMemoryDeadLetters,
};
use bus_rabbitmq::{RabbitConfig, RabbitPublisher, Topology};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    commands,
    config::{DatabaseConfig, SchemaArgs},
    events,
    http::ReadinessCheck,
    store::{Database, Repositories},
};

/// Connects to the configured database (creating it if needed) and applies
/// its migrations.
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Database> {
    Database::connect(&config.database_url, config.db_max_connections).await
}

/// The database of a long-running process: [`connect`], or with
/// `--skip-migrations` connected without creating or migrating anything,
/// once the schema is this release's.
pub(super) async fn open(config: &DatabaseConfig, schema: &SchemaArgs) -> anyhow::Result<Database> {
    if schema.skip_migrations {
        Database::connect_without_migrating(
            &config.database_url,
            config.db_max_connections,
            schema.schema_wait,
        )
        .await
    } else {
        connect(config).await
    }
}

/// Every command handler and event subscriber of the marketplace; `waker`
/// is woken after each successful command so its events are relayed at once.
///
/// Each command handled without error is logged at `debug` with the trace
/// id of the request that sent it: an operator following one request sees
/// when its command took effect, a redelivered copy included.
pub(super) fn handlers(
    store: &Repositories,
    waker: OutboxWaker,
    batch: BatchConfig,
) -> Result<Handlers, bus_core::RegistrationError> {
    let builder = Handlers::builder();
    let builder = commands::register(builder, store, batch);
    let builder = events::register(builder, store, batch);
    builder
        .on_command_success(move |envelope| {
            tracing::debug!(
                message_id = %envelope.id,
                message_type = %envelope.message_type,
                trace_id = %envelope
                    .trace_context()
                    .map(|trace| trace.trace_id_hex())
                    .unwrap_or_default(),
                "command applied"
            );
            waker.wake()
        })
        .build()
}

/// The broker topology of every handler of the marketplace under
/// `rabbit`'s namespace, for a tool that works on its queues without
/// running the handlers (`dead-letters`): the handlers are registered only
/// for their names, over a pool that never connects.
pub fn rabbit_topology(rabbit: &RabbitConfig) -> anyhow::Result<Topology> {
    let unused = PgPoolOptions::new().connect_lazy_with(PgConnectOptions::new_without_pgpass());
    let store = Database::Postgres(unused).repositories();
    let handlers = handlers(&store, OutboxWaker::new(), BatchConfig::disabled())?;
    Ok(rabbit.topology(&handlers))
}

/// The async bus's dead letters: stored in the database's
/// `bus_dead_letters` table, where they outlive the process, and the
/// latest also in memory for `App::dead_letters`.
pub(super) struct DurableDeadLetters {
    database: DatabaseDeadLetters,
    recent: InMemoryDeadLetters,
}

impl DurableDeadLetters {
    pub(super) fn new(database: &Database, recent: InMemoryDeadLetters) -> Self {
        let database = match database {
            Database::Postgres(pool) => DatabaseDeadLetters::postgres(pool.clone()),
            Database::Sqlite(store) => DatabaseDeadLetters::sqlite(store.writer().clone()),
        };
        Self { database, recent }
    }
}

impl DeadLetterSink for DurableDeadLetters {
    fn store(&self, dead_letter: DeadLetter) {
        self.recent.store(dead_letter.clone());
        self.database.store(dead_letter);
    }
}

/// The durable bus on `database`'s `bus_messages` table: on SQLite through
/// the one writing connection the handlers also write with.
pub(super) fn durable_bus(
    database: &Database,
    handlers: Handlers,
    config: DurableBusConfig,
    breaker: CircuitBreaker,
    recent: InMemoryDeadLetters,
) -> DurableBus {
    let builder = match database {
        Database::Postgres(pool) => DurableBus::postgres(pool.clone(), handlers),
        Database::Sqlite(store) => DurableBus::sqlite(store.writer().clone(), handlers),
    };
    builder
        .config(config)
        .breaker(breaker)
        .dead_letters(Arc::new(recent))
        .start()
}

/// The breaker consumers pause behind while the database is away: it probes
/// with the readiness query (`SELECT 1`) until the database answers.
pub(super) fn database_breaker(database: &Database) -> CircuitBreaker {
    let database = database.clone();
    CircuitBreaker::with_probe(BreakerConfig::default(), move || {
        let database = database.clone();
        async move { database.ping().await }
    })
}

/// `/health/ready` answers `503` with the reason while consumers are paused.
pub(super) fn consumer_readiness(breaker: CircuitBreaker) -> ReadinessCheck {
    Arc::new(move || {
        let paused = breaker.paused();
        Box::pin(async move {
            match paused {
                Some(reason) => Err(format!("consumers {reason}")),
                None => Ok(()),
            }
        })
    })
}

/// `/health/ready` also requires the broker to answer.
pub(super) fn broker_readiness(publisher: RabbitPublisher) -> ReadinessCheck {
    Arc::new(move || {
        let publisher = publisher.clone();
        Box::pin(async move {
            publisher
                .ensure_connected()
                .await
                .map_err(|error| format!("broker: {error}"))
        })
    })
}

pub(super) fn outbox_relay(
    database: &Database,
    events: Arc<dyn EventBus>,
    waker: OutboxWaker,
) -> OutboxRelay {
    let relay = match database {
        Database::Postgres(pool) => OutboxRelay::new(pool.clone(), events, RelayConfig::default()),
        Database::Sqlite(store) => {
            OutboxRelay::new(store.writer().clone(), events, RelayConfig::default())
        }
    };
    relay.with_waker(waker)
}

pub(super) fn spawn_relay(relay: OutboxRelay, stop: &CancellationToken) -> JoinHandle<()> {
    let stop = stop.clone();
    tokio::spawn(relay.run(async move { stop.cancelled().await }))
}

/// Whether `url` names a PostgreSQL database.
pub(super) fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}
