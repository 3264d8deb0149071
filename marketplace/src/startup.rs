//! Builds the application from its configuration, identically for the
//! binary and the tests: database, migrations, handlers, buses, outbox
//! relay, router and listener.
//!
//! Two roles: [`App`] serves the HTTP API (and, with the in-memory buses,
//! runs the handlers too); [`Worker`] consumes RabbitMQ and relays the
//! outbox, with only health probes over HTTP.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::serve::ListenerExt;
use bus_core::{
    outbox::{OutboxRelay, OutboxWaker, RelayConfig},
    AsyncBus, CommandBus, EventBus, Handlers, InMemoryBus, InMemoryDeadLetters,
};
use bus_rabbitmq::{RabbitPublisher, RabbitWorker};
use sqlx::PgPool;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    commands,
    config::{BusKind, DatabaseConfig, ServeConfig, WorkerConfig},
    events,
    http::{self, AppState, ReadinessCheck},
    queries,
    store::{Database, Repositories},
};

/// Connects to the configured database (creating it if needed) and applies
/// its migrations.
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Database> {
    Database::connect(&config.database_url, config.db_max_connections).await
}

/// Every command handler and event subscriber of the marketplace; `waker`
/// is woken after each successful command so its events are relayed at once.
pub fn handlers(
    store: &Repositories,
    waker: OutboxWaker,
) -> Result<Handlers, bus_core::RegistrationError> {
    let builder = Handlers::builder();
    let builder = commands::register(builder, store);
    let builder = events::register(builder, store);
    builder.on_command_success(move |_| waker.wake()).build()
}

/// `/health/ready` also requires the broker to answer.
fn broker_readiness(publisher: RabbitPublisher) -> ReadinessCheck {
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

/// The buses that run in this process, to be drained at shutdown.
enum Buses {
    Sync,
    Async {
        commands: AsyncBus,
        events: AsyncBus,
    },
    Rabbit {
        publisher: RabbitPublisher,
    },
}

/// The HTTP API, built and not yet running.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    buses: Buses,
    relay: Option<OutboxRelay>,
    dead_letters: InMemoryDeadLetters,
}

impl App {
    /// Connects, migrates and builds the application described by `config`.
    pub async fn build(config: &ServeConfig) -> anyhow::Result<Self> {
        if config.bus == BusKind::Rabbitmq && !is_postgres(&config.database.database_url) {
            anyhow::bail!(crate::store::RABBITMQ_NEEDS_POSTGRES);
        }
        let database = connect(&config.database).await?;
        Self::build_with_database(config, database).await
    }

    /// Builds the application on an existing, migrated PostgreSQL pool (tests).
    pub async fn build_with_pool(config: &ServeConfig, pool: PgPool) -> anyhow::Result<Self> {
        Self::build_with_database(config, Database::Postgres(pool)).await
    }

    /// Builds the application on an existing, migrated database.
    pub async fn build_with_database(
        config: &ServeConfig,
        database: Database,
    ) -> anyhow::Result<Self> {
        log_storage(&database, &config.database.database_url);
        tracing::info!(bus = ?config.bus, "bus: {}", describe_bus(config.bus));
        if config.bus == BusKind::Rabbitmq {
            database.require_postgres()?;
        }
        let store = database.repositories();
        let waker = OutboxWaker::new();
        let handlers = handlers(&store, waker.clone())?;
        let dead_letters = InMemoryDeadLetters::default();
        let mut readiness = Vec::new();
        let (commands, relay, buses): (Arc<dyn CommandBus>, Option<OutboxRelay>, Buses) =
            match config.bus {
                BusKind::InMemory => {
                    let bus = Arc::new(InMemoryBus::with_dead_letters(
                        handlers,
                        Arc::new(dead_letters.clone()),
                    ));
                    let relay = outbox_relay(&database, bus.clone(), waker);
                    (bus, Some(relay), Buses::Sync)
                }
                BusKind::InMemoryAsync => {
                    // Separate queues so shutdown can drain commands, then relay
                    // the events they raised, then drain those.
                    let settings = config.async_bus_config();
                    let sink = Arc::new(dead_letters.clone());
                    let commands = AsyncBus::start_with_dead_letters(
                        handlers.clone(),
                        settings.clone(),
                        sink.clone(),
                    );
                    let events = AsyncBus::start_with_dead_letters(handlers, settings, sink);
                    let relay = outbox_relay(&database, Arc::new(events.clone()), waker);
                    (
                        Arc::new(commands.clone()),
                        Some(relay),
                        Buses::Async { commands, events },
                    )
                }
                BusKind::Rabbitmq => {
                    // The API only publishes: workers run the handlers and the
                    // outbox relay. It still declares the whole topology, so a
                    // command accepted before any worker started has a queue.
                    let rabbit = config.rabbit_config();
                    let publisher = RabbitPublisher::new(&rabbit, rabbit.topology(&handlers))?;
                    if let Err(error) = publisher.ensure_connected().await {
                        tracing::warn!(%error, "broker unreachable at start; writes answer 503 until it is back");
                    }
                    readiness.push(broker_readiness(publisher.clone()));
                    (
                        Arc::new(publisher.clone()),
                        None,
                        Buses::Rabbit { publisher },
                    )
                }
            };
        let state = AppState {
            commands,
            queries: queries::query_bus(&store)?,
            database,
            readiness,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        tracing::info!(address = %listener.local_addr()?, bus = ?config.bus, "marketplace API ready");
        Ok(Self {
            listener,
            router: http::router(state),
            buses,
            relay,
            dead_letters,
        })
    }

    /// The address the API listens on (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Messages given up on so far (kept in memory by the in-memory buses).
    pub fn dead_letters(&self) -> InMemoryDeadLetters {
        self.dead_letters.clone()
    }

    /// Serves until `shutdown` completes, then stops gracefully: in-flight
    /// requests finish, accepted commands are applied, and the events they
    /// raised are relayed and handled before this returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop_relay = CancellationToken::new();
        let relay = self.relay.map(|relay| spawn_relay(relay, &stop_relay));
        axum::serve(self.listener.tap_io(no_delay), self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("HTTP server failed")?;
        tracing::info!("HTTP server stopped; draining the bus");
        if let Buses::Async { commands, .. } = &self.buses {
            commands.shutdown().await;
        }
        // The relay flushes the outbox once more before it returns.
        stop_relay.cancel();
        if let Some(relay) = relay {
            relay.await.context("outbox relay panicked")?;
        }
        match &self.buses {
            Buses::Async { events, .. } => events.shutdown().await,
            Buses::Rabbit { publisher } => publisher.close(),
            Buses::Sync => {}
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Answers leave at once instead of waiting, as Nagle's algorithm would,
/// for the peer to acknowledge an earlier segment.
fn no_delay(stream: &mut tokio::net::TcpStream) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "cannot set TCP_NODELAY");
    }
}

fn outbox_relay(database: &Database, events: Arc<dyn EventBus>, waker: OutboxWaker) -> OutboxRelay {
    let relay = match database {
        Database::Postgres(pool) => OutboxRelay::new(pool.clone(), events, RelayConfig::default()),
        Database::Sqlite(store) => {
            OutboxRelay::new(store.writer().clone(), events, RelayConfig::default())
        }
    };
    relay.with_waker(waker)
}

/// Whether `url` names a PostgreSQL database.
fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The first log lines say where the data lives.
fn log_storage(database: &Database, url: &str) {
    match database {
        Database::Postgres(_) => tracing::info!("storage: PostgreSQL"),
        Database::Sqlite(_) => tracing::info!(
            "storage: embedded SQLite database {} (set DATABASE_URL=postgres://... for PostgreSQL)",
            url.trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:")
        ),
    }
}

fn describe_bus(bus: BusKind) -> &'static str {
    match bus {
        BusKind::InMemory => "in-memory (handlers run inside each request)",
        BusKind::InMemoryAsync => {
            "in-memory async (commands queued in this process; --bus rabbitmq for RabbitMQ)"
        }
        BusKind::Rabbitmq => "RabbitMQ (workers apply the commands)",
    }
}

fn spawn_relay(relay: OutboxRelay, stop: &CancellationToken) -> JoinHandle<()> {
    let stop = stop.clone();
    tokio::spawn(relay.run(async move { stop.cancelled().await }))
}

/// `marketplace worker`: RabbitMQ consumers for every command and
/// subscriber, the outbox relay, and health probes.
pub struct Worker {
    consumer: RabbitWorker,
    publisher: RabbitPublisher,
    relay: OutboxRelay,
    health: TcpListener,
    router: axum::Router,
}

impl Worker {
    /// Connects, migrates and builds the worker described by `config`.
    /// The worker needs PostgreSQL.
    pub async fn build(config: &WorkerConfig) -> anyhow::Result<Self> {
        if !is_postgres(&config.database.database_url) {
            anyhow::bail!(crate::store::RABBITMQ_NEEDS_POSTGRES);
        }
        let database = connect(&config.database).await?;
        Self::build_with_pool(config, database.require_postgres()?.clone()).await
    }

    /// Builds the worker on an existing, migrated pool (tests).
    pub async fn build_with_pool(config: &WorkerConfig, pool: PgPool) -> anyhow::Result<Self> {
        let database = Database::Postgres(pool);
        let store = database.repositories();
        let waker = OutboxWaker::new();
        let handlers = handlers(&store, waker.clone())?;
        let rabbit = config.rabbit_config();
        let publisher = RabbitPublisher::new(&rabbit, rabbit.topology(&handlers))?;
        let consumer = RabbitWorker::new(&handlers, rabbit)?;
        let relay = outbox_relay(&database, Arc::new(publisher.clone()), waker);
        let state = AppState {
            commands: Arc::new(publisher.clone()),
            queries: queries::query_bus(&store)?,
            database,
            readiness: vec![broker_readiness(publisher.clone())],
        };
        let health = TcpListener::bind(config.health_listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.health_listen))?;
        tracing::info!(health = %health.local_addr()?, "marketplace worker ready");
        Ok(Self {
            consumer,
            publisher,
            relay,
            health,
            router: http::health_router(state),
        })
    }

    /// Every exchange and queue this worker declares.
    pub fn topology(&self) -> bus_rabbitmq::Topology {
        self.consumer.topology().clone()
    }

    /// The address of the health probes.
    pub fn health_addr(&self) -> std::io::Result<SocketAddr> {
        self.health.local_addr()
    }

    /// Consumes until `shutdown` completes, then stops gracefully: consumers
    /// are cancelled, in-flight handlers finish and are acknowledged, the
    /// outbox is flushed, channels and connections are closed.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let relay = spawn_relay(self.relay, &stop);
        let health_stop = stop.clone();
        let health = tokio::spawn(async move {
            axum::serve(self.health.tap_io(no_delay), self.router)
                .with_graceful_shutdown(async move { health_stop.cancelled().await })
                .await
        });
        let consumer_stop = stop.clone();
        let consuming = self
            .consumer
            .run(async move { consumer_stop.cancelled().await });
        tokio::pin!(consuming);
        let result = tokio::select! {
            result = &mut consuming => result,
            _ = shutdown => {
                tracing::info!("stopping consumers");
                stop.cancel();
                consuming.await
            }
        };
        stop.cancel();
        relay.await.context("outbox relay panicked")?;
        self.publisher.close();
        health.await.context("health server panicked")??;
        result.context("RabbitMQ worker failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}
