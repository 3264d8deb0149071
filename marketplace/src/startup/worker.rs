//! `marketplace worker`: the RabbitMQ consumers, the outbox relay and the
//! health probes.

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context;
use bus_core::outbox::{OutboxRelay, OutboxWaker};
use bus_rabbitmq::{RabbitPublisher, RabbitWorker};
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
    http::{self, access::Authentication, AppState},
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
        let database = Database::Postgres(pool);
        let store = database.repositories();
        let waker = OutboxWaker::new();
        let handlers = handlers(&store, waker.clone())?;
        let rabbit = config.rabbit_config();
        let publisher = RabbitPublisher::new(&rabbit, rabbit.topology(&handlers))?;
        let breaker = database_breaker(&database);
        let consumer = RabbitWorker::new(&handlers, rabbit)?.with_breaker(breaker.clone());
        let relay = outbox_relay(&database, Arc::new(publisher.clone()), waker);
        let state = AppState {
            commands: Arc::new(publisher.clone()),
            queries: queries::query_bus(&store)?,
            database,
            readiness: vec![
                consumer_readiness(breaker),
                broker_readiness(publisher.clone()),
            ],
            // A worker serves no API: its readiness says `"auth": "off"`.
            auth: Authentication::Off,
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
        self.publisher.close();
        health.await.context("health server panicked")?;
        result.context("RabbitMQ worker failed")?;
        tracing::info!("stopped");
        Ok(())
    }
}
