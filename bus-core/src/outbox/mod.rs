//! Transactional outbox, on PostgreSQL (feature `postgres`) or SQLite
//! (feature `sqlite`).
//!
//! A command handler that raises events must not publish them directly: if
//! the process dies after its commit and before the publish, the event is
//! lost; if it publishes first and the transaction rolls back, subscribers
//! react to a change that never happened. Instead the handler *stages* each
//! event in the same transaction as its changes ([`postgres::stage`],
//! [`sqlite::stage`]), and an [`OutboxRelay`] publishes committed events to
//! an [`EventBus`] and deletes them once the bus accepted them: a batch of
//! staged events is published at once ([`EventBus::publish_batch`]; on
//! RabbitMQ with pipelined confirms) and the published ones are deleted in
//! one statement (`DELETE … WHERE position = ANY($1)` on PostgreSQL, an `IN`
//! over a JSON array on SQLite).
//!
//! On PostgreSQL the relay locks rows with `FOR UPDATE SKIP LOCKED`, so every
//! worker replica can run one: each batch is taken by exactly one relay at a
//! time. Delivery is at-least-once (a relay that dies after publishing and
//! before deleting publishes again), so subscribers must be idempotent.
//! Events of different batches may be published out of order.
//!
//! The table must exist; add the backend's `SCHEMA` to your migrations.

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::{stage, SCHEMA};

use std::{future::Future, sync::Arc, time::Duration};

use tokio::sync::Notify;
use tracing::Instrument;

use crate::{BoxFuture, Envelope, EventBus};

/// Where staged events are kept: one implementation per database
/// (`PgPool`, `SqlitePool`).
pub trait OutboxStore: Send + Sync + 'static {
    /// Takes up to `limit` committed events in staging order, publishes them
    /// on `bus` (with [`publish_each`]) and deletes those the bus accepted;
    /// returns how many were published. Events the bus refused stay for the
    /// next batch.
    fn relay_batch<'a>(
        &'a self,
        bus: &'a dyn EventBus,
        limit: usize,
    ) -> BoxFuture<'a, Result<usize, sqlx::Error>>;
}

/// Publishes every `(position, envelope)` as one batch
/// ([`EventBus::publish_batch`]: on RabbitMQ, all sent on one channel, then
/// every confirm awaited) and returns the positions the bus accepted;
/// refusals are logged and left out.
///
/// Each event's outcome is logged in a `publish` span carrying the event's
/// `trace_id` (and its `traceparent` span as `parent_span_id`), so the
/// relay's lines belong to the trace of the request whose handler staged
/// the event.
pub async fn publish_each(bus: &dyn EventBus, rows: &[(i64, Envelope)]) -> Vec<i64> {
    let results = bus
        .publish_batch(rows.iter().map(|(_, envelope)| envelope.clone()).collect())
        .instrument(tracing::info_span!("publish_batch", size = rows.len()))
        .await;
    let mut published = Vec::with_capacity(rows.len());
    for ((position, envelope), result) in rows.iter().zip(results) {
        let trace = envelope.trace_context();
        let span = tracing::info_span!(
            "publish",
            message_id = %envelope.id,
            message_type = %envelope.message_type,
            trace_id = trace.map(|trace| tracing::field::display(trace.trace_id_hex())),
            parent_span_id = trace.map(|trace| tracing::field::display(trace.span_id_hex())),
            trace_flags = trace.map(|trace| tracing::field::display(trace.flags_hex())),
        );
        let _entered = span.enter();
        match result {
            Ok(()) => {
                tracing::debug!("outbox event published");
                published.push(*position);
            }
            Err(error) => tracing::warn!(%error, "outbox event not published yet; will retry"),
        }
    }
    published
}

/// Settings of an [`OutboxRelay`].
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Events taken per transaction, published as one batch
    /// ([`EventBus::publish_batch`]) and deleted in one statement.
    pub batch_size: usize,
    /// How often to look for events when nobody woke the relay (events
    /// staged by another process, or left by one that died).
    pub poll_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 200,
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// Wakes an [`OutboxRelay`] at once (e.g. right after a handler committed).
///
/// Create it before the handlers (so their success hook can hold it) and
/// give it to the relay with [`OutboxRelay::with_waker`].
#[derive(Debug, Clone, Default)]
pub struct OutboxWaker(Arc<Notify>);

impl OutboxWaker {
    /// A waker not yet attached to a relay.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the relay to look for events now.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

/// Publishes committed events from the outbox table to an event bus.
pub struct OutboxRelay {
    store: Arc<dyn OutboxStore>,
    bus: Arc<dyn EventBus>,
    config: RelayConfig,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for OutboxRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxRelay")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OutboxRelay {
    /// A relay from the outbox in `store` (a `PgPool` or a `SqlitePool`)
    /// to `bus`.
    pub fn new(store: impl OutboxStore, bus: Arc<dyn EventBus>, config: RelayConfig) -> Self {
        Self {
            store: Arc::new(store),
            bus,
            config,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Makes `waker` wake this relay (replacing its own).
    pub fn with_waker(mut self, waker: OutboxWaker) -> Self {
        self.wake = waker.0;
        self
    }

    /// A handle that wakes this relay.
    pub fn waker(&self) -> OutboxWaker {
        OutboxWaker(self.wake.clone())
    }

    /// Publishes one batch; returns how many events were published.
    ///
    /// Events the bus refuses (e.g. saturated, broker down) stay in the
    /// outbox for the next batch.
    pub async fn relay_batch(&self) -> Result<usize, sqlx::Error> {
        self.store
            .relay_batch(self.bus.as_ref(), self.config.batch_size)
            .await
    }

    /// Relays until `shutdown` completes, then flushes what is left once.
    ///
    /// Between batches it sleeps until woken or `poll_interval` passes.
    /// Errors are logged and retried after `poll_interval`.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        tokio::pin!(shutdown);
        loop {
            let idle = match self.relay_batch().await {
                Ok(n) => n < self.config.batch_size,
                Err(error) => {
                    tracing::error!(%error, "outbox relay failed; retrying");
                    true
                }
            };
            if idle {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                }
            }
        }
        self.flush().await;
    }

    /// Publishes everything in the outbox now (used at shutdown).
    pub async fn flush(&self) {
        loop {
            match self.relay_batch().await {
                Ok(0) => break,
                Ok(_) => continue,
                Err(error) => {
                    tracing::error!(%error, "outbox flush failed; events stay for the next relay");
                    break;
                }
            }
        }
    }
}
