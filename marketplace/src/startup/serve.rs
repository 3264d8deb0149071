//! `marketplace serve`: the HTTP API, and with the in-memory buses the
//! handlers and the outbox relay too.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use bus_core::{
    outbox::{OutboxRelay, OutboxWaker},
    AsyncBus, CommandBus, DurableBus, InMemoryBus, InMemoryDeadLetters,
};
use bus_rabbitmq::RabbitPublisher;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{
    connections::{self, ConnectionLimits},
    metrics,
    wiring::{
        broker_readiness, consumer_readiness, database_breaker, durable_bus, handlers, is_postgres,
        open, outbox_relay, spawn_relay, DurableDeadLetters,
    },
};
use crate::{
    auth::Verifier,
    config::{BusKind, EdgeArgs, ServeConfig},
    http::{
        self,
        access::Authentication,
        edge::{EdgeLimits, RateLimit, TrustedProxies},
        AppState, ReadinessCheck,
    },
    queries,
    store::Database,
};

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
    Durable {
        bus: DurableBus,
    },
}

/// The HTTP API, built and not yet running.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    connections: ConnectionLimits,
    /// The reads' own pool (PostgreSQL, statements that time out), closed
    /// once the server stopped.
    reads: Option<Database>,
    /// The read replica's pool (`--read-database-url`), closed once the
    /// server stopped.
    replica: Option<Database>,
    buses: Buses,
    relay: Option<OutboxRelay>,
    dead_letters: InMemoryDeadLetters,
    /// The database whose pools and outbox the metrics sample.
    database: Database,
}

impl App {
    /// Connects, migrates (or, with `--skip-migrations`, checks the schema)
    /// and builds the application described by `config`.
    pub async fn build(config: &ServeConfig) -> anyhow::Result<Self> {
        if config.bus == BusKind::Rabbitmq && !is_postgres(&config.database.database_url) {
            anyhow::bail!(crate::store::RABBITMQ_NEEDS_POSTGRES);
        }
        if config.read_database_url.is_some() && !is_postgres(&config.database.database_url) {
            anyhow::bail!(READ_REPLICA_NEEDS_POSTGRES);
        }
        let database = open(&config.database, &config.schema).await?;
        Self::build_with_database(config, database).await
    }

    /// Builds the application on an existing, migrated database.
    pub async fn build_with_database(
        config: &ServeConfig,
        database: Database,
    ) -> anyhow::Result<Self> {
        log_storage(&database, &config.database.database_url);
        tracing::info!(bus = ?config.bus, "bus: {}", describe_bus(config.bus));
        if config.bus == BusKind::InMemoryAsync {
            tracing::warn!(
                "the in-memory async bus keeps accepted commands in memory only: a crash loses \
                 those not yet applied (--bus durable keeps them in the database)"
            );
        }
        if config.bus == BusKind::Rabbitmq {
            database.require_postgres()?;
        }
        let auth = authentication(config).await?;
        let store = database.repositories();
        let waker = OutboxWaker::new();
        let handlers = handlers(&store, waker.clone(), config.batch.config())?;
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
                    // One breaker for both: they depend on the same database.
                    let settings = config.async_bus_config();
                    let sink: Arc<dyn bus_core::DeadLetterSink> =
                        Arc::new(DurableDeadLetters::new(&database, dead_letters.clone()));
                    let breaker = database_breaker(&database);
                    readiness.push(consumer_readiness(breaker.clone()));
                    let commands = AsyncBus::builder(handlers.clone())
                        .config(settings.clone())
                        .dead_letters(sink.clone())
                        .breaker(breaker.clone())
                        .start();
                    let events = AsyncBus::builder(handlers)
                        .config(settings)
                        .dead_letters(sink)
                        .breaker(breaker)
                        .start();
                    let relay = outbox_relay(&database, Arc::new(events.clone()), waker);
                    (
                        Arc::new(commands.clone()),
                        Some(relay),
                        Buses::Async { commands, events },
                    )
                }
                BusKind::Durable => {
                    // One table for commands and events; the relay moves the
                    // events handlers staged in the outbox into it.
                    let breaker = database_breaker(&database);
                    readiness.push(consumer_readiness(breaker.clone()));
                    let bus = durable_bus(
                        &database,
                        handlers,
                        config.durable_bus_config(),
                        breaker,
                        dead_letters.clone(),
                    );
                    let relay = outbox_relay(&database, Arc::new(bus.clone()), waker);
                    (Arc::new(bus.clone()), Some(relay), Buses::Durable { bus })
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
        let reads = database.for_reads(config.edge.read_statement_timeout);
        let replica = read_replica(config, &database)?;
        if let Some(replica) = &replica {
            readiness.push(replica_readiness(replica.clone()));
        }
        let primary_reads = reads.as_ref().unwrap_or(&database).repositories();
        let replica_reads = replica
            .as_ref()
            .map_or_else(|| primary_reads.clone(), Database::repositories);
        http::metrics::handle();
        let state = AppState {
            commands,
            queries: queries::query_bus(&primary_reads, &replica_reads)?,
            database: database.clone(),
            readiness: readiness.into(),
            auth,
            consumers: None,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        tracing::info!(address = %listener.local_addr()?, bus = ?config.bus, "marketplace API ready");
        Ok(Self {
            listener,
            router: http::router(state, &edge_limits(&config.edge)),
            connections: ConnectionLimits::from(&config.edge.connections),
            reads,
            replica,
            buses,
            relay,
            dead_letters,
            database,
        })
    }

    /// The address the API listens on (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Messages given up on so far by this process's in-memory buses (the
    /// async bus also stores them in the `bus_dead_letters` table).
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
        let sampler = metrics::spawn_sampler(self.database.clone(), None, stop_relay.clone());
        connections::serve(self.listener, self.router, self.connections, shutdown).await;
        for pool in [&self.reads, &self.replica].into_iter().flatten() {
            pool.close().await;
        }
        tracing::info!("HTTP server stopped; draining the bus");
        match &self.buses {
            Buses::Async { commands, .. } => commands.shutdown().await,
            // Runs what is due, the events relayed meanwhile included; what
            // the relay flushes afterwards waits in the table.
            Buses::Durable { bus } => bus.shutdown().await,
            _ => {}
        }
        // The relay flushes the outbox once more before it returns.
        stop_relay.cancel();
        if let Some(relay) = relay {
            relay.await.context("outbox relay panicked")?;
        }
        sampler.await.context("metrics sampler panicked")?;
        match &self.buses {
            Buses::Async { events, .. } => events.shutdown().await,
            Buses::Rabbit { publisher } => publisher.close(),
            Buses::Sync | Buses::Durable { .. } => {}
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Why `--read-database-url` is refused.
const READ_REPLICA_NEEDS_POSTGRES: &str = "--read-database-url (MARKETPLACE_READ_DATABASE_URL) \
needs PostgreSQL: it names a streaming replica of the PostgreSQL database of --database-url \
(DATABASE_URL=postgres://...); SQLite has no replica";

/// The read replica of `--read-database-url`, if one is set: refused unless
/// the database is PostgreSQL. Its pool has the primary's size and read
/// statement timeout.
fn read_replica(config: &ServeConfig, database: &Database) -> anyhow::Result<Option<Database>> {
    let Some(url) = &config.read_database_url else {
        return Ok(None);
    };
    if database.postgres().is_none() {
        anyhow::bail!(READ_REPLICA_NEEDS_POSTGRES);
    }
    let replica = Database::replica(
        url,
        config.database.db_max_connections,
        config.edge.read_statement_timeout,
    )?;
    tracing::info!("reads that may lag (GET routes but /orders/{{id}}) go to the read replica");
    Ok(Some(replica))
}

/// `/health/ready` also requires the read replica to answer (within the
/// ping's timeout: a replica away answers 503, not a hang).
fn replica_readiness(replica: Database) -> ReadinessCheck {
    Arc::new(move || {
        let replica = replica.clone();
        Box::pin(async move {
            replica.ping().await.map_err(|error| {
                format!("read replica: {}", error.trim_start_matches("database: "))
            })
        })
    })
}

/// Who may do what: bearer tokens from the one configured key source, or
/// open mode (no check at all) when none is configured.
async fn authentication(config: &ServeConfig) -> anyhow::Result<Authentication> {
    let Some(source) = config.auth.key_source()? else {
        tracing::warn!(
            "authentication is off: any client may act as any user (set --auth-secret, \
             --auth-key-file or --auth-jwks-url to require bearer tokens)"
        );
        return Ok(Authentication::Off);
    };
    let claims = config.auth.claims.claims();
    let verifier = Verifier::new(&source, &claims, config.auth.jwks_policy()).await?;
    if let crate::auth::KeySource::Jwks(url) = &source {
        if url.starts_with("http://") {
            tracing::warn!(%url, "the JWKS is fetched over plain HTTP: use https:// outside tests");
        }
    }
    tracing::info!(
        keys = verifier.source(),
        issuer = %claims.issuer,
        audience = %claims.audience,
        "authentication is on: writes and order reads need a bearer token"
    );
    Ok(Authentication::Bearer(verifier))
}

/// The edge's limits from the `serve` flags.
fn edge_limits(edge: &EdgeArgs) -> EdgeLimits {
    let rate_limit = RateLimit::new(edge.rate_limit_per_second, edge.rate_limit_burst);
    match rate_limit {
        Some(rate) => tracing::info!(
            per_second = rate.per_second,
            burst = rate.burst,
            "rate limit per client"
        ),
        None => tracing::warn!("no rate limit per client (--rate-limit-per-second 0)"),
    }
    let trusted_proxies = TrustedProxies::new(edge.trusted_proxies.0.clone());
    if !trusted_proxies.is_empty() {
        tracing::info!(
            trusted_proxies = ?edge.trusted_proxies.0,
            "clients behind these proxies are told apart by X-Forwarded-For"
        );
    }
    EdgeLimits {
        max_in_flight: edge.max_in_flight as usize,
        rate_limit,
        request_timeout: edge.request_timeout,
        trusted_proxies,
    }
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
            "in-memory async (commands queued in this process's memory; --bus durable keeps them in the database)"
        }
        BusKind::Durable => {
            "durable (commands committed to the database's bus_messages table before a 200)"
        }
        BusKind::Rabbitmq => "RabbitMQ (workers apply the commands)",
    }
}
