//! Builds the application from its configuration, identically for the
//! binary and the tests: pool, migrations, handlers, buses, outbox relay,
//! router and listener.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use bus_core::{
    outbox::{OutboxRelay, OutboxWaker, RelayConfig},
    AsyncBus, CommandBus, EventBus, Handlers, InMemoryBus, InMemoryDeadLetters,
};
use sqlx::{migrate::MigrateDatabase, postgres::PgPoolOptions, PgPool, Postgres};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

use crate::{
    commands,
    config::{BusKind, DatabaseConfig, ServeConfig},
    events,
    http::{self, AppState},
    queries, MIGRATOR,
};

/// Connects to the database (creating it if needed) and applies migrations.
pub async fn connect_and_migrate(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    if !Postgres::database_exists(&config.database_url)
        .await
        .context("cannot reach PostgreSQL")?
    {
        Postgres::create_database(&config.database_url)
            .await
            .context("cannot create the database")?;
    }
    let pool = PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(&config.database_url)
        .await
        .context("cannot connect to PostgreSQL")?;
    MIGRATOR
        .run(&pool)
        .await
        .context("cannot apply migrations")?;
    Ok(pool)
}

/// Every command handler and event subscriber of the marketplace; `waker`
/// is woken after each successful command so its events are relayed at once.
pub fn handlers(
    pool: &PgPool,
    waker: OutboxWaker,
) -> Result<Handlers, bus_core::RegistrationError> {
    let builder = Handlers::builder();
    let builder = commands::register(builder, pool);
    let builder = events::register(builder, pool);
    builder.on_command_success(move |_| waker.wake()).build()
}

/// The buses that run in this process, to be drained at shutdown.
enum Buses {
    Sync,
    Async {
        commands: AsyncBus,
        events: AsyncBus,
    },
}

/// A built, not yet running, application.
pub struct App {
    listener: TcpListener,
    router: axum::Router,
    buses: Buses,
    relay: OutboxRelay,
    dead_letters: InMemoryDeadLetters,
}

impl App {
    /// Connects, migrates and builds the application described by `config`.
    pub async fn build(config: &ServeConfig) -> anyhow::Result<Self> {
        let pool = connect_and_migrate(&config.database).await?;
        Self::build_with_pool(config, pool).await
    }

    /// Builds the application on an existing, migrated pool (tests).
    pub async fn build_with_pool(config: &ServeConfig, pool: PgPool) -> anyhow::Result<Self> {
        let waker = OutboxWaker::new();
        let handlers = handlers(&pool, waker.clone())?;
        let dead_letters = InMemoryDeadLetters::default();
        let (commands, events, buses): (Arc<dyn CommandBus>, Arc<dyn EventBus>, Buses) =
            match config.bus {
                BusKind::InMemory => {
                    let bus = Arc::new(InMemoryBus::with_dead_letters(
                        handlers,
                        Arc::new(dead_letters.clone()),
                    ));
                    (bus.clone(), bus, Buses::Sync)
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
                    (
                        Arc::new(commands.clone()),
                        Arc::new(events.clone()),
                        Buses::Async { commands, events },
                    )
                }
            };
        let relay =
            OutboxRelay::new(pool.clone(), events, RelayConfig::default()).with_waker(waker);
        let state = AppState {
            commands,
            queries: queries::query_bus(&pool)?,
            pool,
            readiness: Vec::new(),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        tracing::info!(
            address = %listener.local_addr()?,
            bus = ?config.bus,
            "marketplace API ready"
        );
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
        let (stop_relay, relay_stopped) = oneshot::channel::<()>();
        let relay: JoinHandle<()> = tokio::spawn(self.relay.run(async {
            let _ = relay_stopped.await;
        }));
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("HTTP server failed")?;
        tracing::info!("HTTP server stopped; draining the bus");
        if let Buses::Async { commands, .. } = &self.buses {
            commands.shutdown().await;
        }
        // The relay flushes the outbox once more before it returns.
        let _ = stop_relay.send(());
        relay.await.context("outbox relay panicked")?;
        if let Buses::Async { events, .. } = &self.buses {
            events.shutdown().await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}
