//! `marketplace worker`: the RabbitMQ consumers, the outbox relay and the
//! health probes.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use bus_core::{
    outbox::{OutboxRelay, OutboxWaker},
    PausedQueues,
};
use bus_rabbitmq::{RabbitPublisher, RabbitWorker, WorkerControl};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{
    connections::{self, ConnectionLimits},
    wiring::{
        broker_readiness, consumer_readiness, database_breaker, handlers, is_postgres, open,
        outbox_relay, spawn_relay,
    },
};
use crate::{
    config::WorkerConfig,
    http::{
        self,
        access::Authentication,
        admin::{self, Admin},
        AppState,
    },
    queries,
    store::Database,
};

/// `marketplace worker`: RabbitMQ consumers for every command and
/// subscriber, the outbox relay, and health probes.
pub struct Worker {
    consumer: RabbitWorker,
    publisher: RabbitPublisher,
    relay: OutboxRelay,
    health: TcpListener,
    router: axum::Router,
    /// The database whose pool and outbox the metrics sample.
    database: Database,
    paused_queues: PausedQueues,
    pause_poll_interval: Duration,
    connections: ConnectionLimits,
}

impl Worker {
    /// Connects, migrates and builds the worker described by `config`.
    /// The worker needs PostgreSQL.
    pub async fn build(config: &WorkerConfig) -> anyhow::Result<Self> {
        if !is_postgres(&config.database.database_url) {
            anyhow::bail!(crate::store::RABBITMQ_NEEDS_POSTGRES);
        }
        let database = open(&config.database, &config.schema).await?;
        Self::build_with_pool(config, database.require_postgres()?.clone()).await
    }

    /// Builds the worker on an existing, migrated pool (tests).
    pub async fn build_with_pool(config: &WorkerConfig, pool: PgPool) -> anyhow::Result<Self> {
        let database = Database::Postgres(pool.clone());
        http::metrics::handle();
        let store = database.repositories();
        let waker = OutboxWaker::new();
        let handlers = handlers(&store, waker.clone(), config.batch.config())?;
        let rabbit = config.rabbit_config();
        let publisher = RabbitPublisher::new(&rabbit, rabbit.topology(&handlers))?;
        let breaker = database_breaker(&database);
        let consumer = RabbitWorker::new(&handlers, rabbit)?.with_breaker(breaker.clone());
        let control = consumer.control().clone();
        // Paused queues stay paused across a restart: none is consumed
        // before the recorded set is applied.
        let paused_queues = PausedQueues::Postgres(pool.clone());
        let paused = paused_queues
            .list()
            .await
            .context("cannot read the paused queues (bus_paused_queues)")?;
        control.set_paused(paused.iter().map(|paused| paused.queue.as_str()));
        if !paused.is_empty() {
            tracing::info!(paused = ?control.paused(), "consumers paused at start");
        }
        let admin_token = config
            .admin
            .token()
            .context("--admin-token / --admin-token-file")?;
        let relay = outbox_relay(&database, Arc::new(publisher.clone()), waker);
        let state = AppState {
            commands: Arc::new(publisher.clone()),
            queries: queries::query_bus(&store, &store)?,
            database: database.clone(),
            readiness: Arc::from([
                consumer_readiness(breaker),
                broker_readiness(publisher.clone()),
            ]),
            // A worker serves no API: its readiness says `"auth": "off"`.
            auth: Authentication::Off,
            consumers: Some(control.clone()),
        };
        let health = TcpListener::bind(config.health_listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.health_listen))?;
        let health_addr = health.local_addr()?;
        let mut router = http::health_router(state);
        match admin_token {
            Some(token) => {
                let paused_by = format!("admin API of the worker on {health_addr}");
                let admin = Admin::new(token, control, paused_queues.clone(), &paused_by);
                router = router.merge(admin::router(admin));
                tracing::info!("admin routes on: /admin/queues");
            }
            None => tracing::info!("admin routes off (no --admin-token)"),
        }
        tracing::info!(health = %health_addr, "marketplace worker ready");
        Ok(Self {
            consumer,
            publisher,
            relay,
            health,
            router,
            database,
            paused_queues,
            pause_poll_interval: config.admin.pause_poll_interval,
            connections: ConnectionLimits::from(&config.connections),
        })
    }

    /// Every exchange and queue this worker declares.
    pub fn topology(&self) -> bus_rabbitmq::Topology {
        self.consumer.topology().clone()
    }

    /// Why the consumers are paused (the database away), or `None`.
    pub fn paused(&self) -> Option<String> {
        self.consumer.paused()
    }

    /// Pauses and resumes the consumers of single queues.
    pub fn control(&self) -> WorkerControl {
        self.consumer.control().clone()
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
        let parts = super::metrics::WorkerParts {
            queues: super::metrics::Queues::new(self.publisher.clone(), self.consumer.topology()),
            consumers: super::metrics::Consumers {
                control: self.consumer.control().clone(),
                breaker: self.consumer.breaker().clone(),
            },
        };
        let sampler =
            super::metrics::spawn_sampler(self.database.clone(), Some(parts), stop.clone());
        let following = tokio::spawn(admin::follow(
            self.paused_queues,
            self.consumer.control().clone(),
            self.pause_poll_interval,
            stop.clone(),
        ));
        let health_stop = stop.clone();
        // The same accept loop as the API's: header-read and idle
        // timeouts, a connection cap.
        let health = tokio::spawn(connections::serve(
            self.health,
            self.router,
            self.connections,
            async move { health_stop.cancelled().await },
        ));
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
        sampler.await.context("metrics sampler panicked")?;
        following.await.context("paused-queue poller panicked")?;
        self.publisher.close();
        health.await.context("health server panicked")?;
        result.context("RabbitMQ worker failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}
