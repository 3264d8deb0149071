//! A bus whose queue is a table of the application's own database
//! (features `postgres`, `sqlite`): a command accepted is a committed row,
//! so a crash loses nothing that was accepted, without a broker.
//!
//! # The queue table
//!
//! `bus_messages` holds one row per message *and handler*: a command is one
//! row for its one handler; an event is fanned out when it is published, one
//! row per subscriber (column `subscriber`), so each subscriber is retried
//! and dead-lettered on its own, as on the other buses. `bus_receipts`
//! holds the receipts handlers record (see below). Add the backend's
//! `SCHEMA` ([`postgres::SCHEMA`], [`sqlite::SCHEMA`]) to your migrations,
//! beside the outbox's and the dead letters'.
//!
//! # Sending
//!
//! [`CommandBus::send_envelope`] and [`EventBus::publish_envelope`] return
//! once the rows are committed. Concurrent sends share one transaction
//! (group commit): a writer task takes every send waiting (up to
//! [`DurableBusConfig::max_group_commit`]) and inserts them together in
//! multi-row statements, so under load one commit (one `fsync` on SQLite)
//! carries many messages. Each sender serialises its envelope itself, so
//! the writer only inserts. On PostgreSQL [`DurableBusConfig::writers`]
//! writers insert groups at once, each on its own connection (while one
//! group commits, the next is inserted); SQLite has one writer. An insert
//! that fails fails every send of its group. [`DurableBus::group_commits`]
//! tells how large the groups were.
//!
//! # Consuming
//!
//! A consumer task claims a batch of due rows (`not_before` passed), runs
//! their handlers concurrently (at most `concurrency` at once) through the
//! shared invocation, settles each result with the one settlement policy
//! ([`decide`](crate::transport::decide)) and applies the settlements in one
//! transaction. The claimed rows of a [`BatchHandler`](crate::BatchHandler)
//! run together, in calls of at most its
//! [`BatchConfig::max_messages`](crate::BatchConfig::max_messages), through
//! the same batch invocation as on the other buses (a batch that fails as a
//! whole is split, message by message); the rows are already there, so no
//! linger is waited for. Every row is settled on its own:
//!
//! | settlement | the row |
//! |---|---|
//! | ack | deleted, with its receipt |
//! | retry after `d` | `attempt + 1`, `not_before = now + d`, `last_error` kept |
//! | dead letter | moved to `bus_dead_letters` (the table [`DeadLetterTable`](crate::DeadLetterTable) reads), in the same transaction |
//! | suspend (infrastructure) | left as it is, attempt not counted; the consumer pauses behind its [`CircuitBreaker`] |
//!
//! A row whose receipt is recorded is acknowledged whatever its handler
//! returned, and a row claimed with its receipt already there is
//! acknowledged without running its handler (see below).
//!
//! - **PostgreSQL**: the batch is claimed with `FOR NO KEY UPDATE SKIP
//!   LOCKED` in a transaction that stays open while its handlers run (the
//!   lock lets a handler's receipt reference the row), so any number of
//!   processes consume the same table and each row is run by one of them at
//!   a time. A process that dies releases its rows at once (PostgreSQL
//!   rolls its transaction back): another consumer, or the same process
//!   restarted, takes them. Consumers wake on `LISTEN bus_messages` (each
//!   send ends with `pg_notify`), with a poll as a safety net.
//! - **SQLite**: one process owns the file, and its one consumer reads the
//!   due rows without a lock; it is woken in-process by each send, with a
//!   poll as a safety net. Run one `DurableBus` per SQLite database.
//!
//! # Pausing a queue
//!
//! An operator pause recorded in `bus_paused_queues`
//! ([`PausedQueues`](crate::PausedQueues)) is honoured at every claim: the
//! rows of a paused queue are not claimed, and stay in the table, due, until
//! it is resumed (within a poll interval). The queue of a command is
//! `command.{message_type}`, that of an event's subscriber
//! `event.{message_type}.{subscriber}` ([`DurableBus::queue_name`]), the
//! names the dead-letter tooling shows. A shutdown leaves them there too.
//!
//! # What a handler must do
//!
//! The handler commits its own transaction, and the row is deleted after
//! that, in the consumer's: by default a crash between the two commits runs
//! the handler again on restart. Delivery is *at-least-once*, and a
//! handler's effect must be idempotent (by the message id, or by a
//! client-chosen entity id as the marketplace's are), exactly as on the
//! other buses.
//!
//! **Exactly-once effect.** A handler that records its message's
//! [`Receipt`] ([`MessageContext::durable_receipt`](crate::MessageContext::durable_receipt))
//! in the transaction of its effect ([`postgres::record_receipts`],
//! [`sqlite::record_receipts`]; one statement for a whole batch) commits the
//! effect and the acknowledgement together, and needs no idempotency of its
//! own for this bus:
//!
//! | what happens | the message |
//! |---|---|
//! | the handler's transaction rolls back | no receipt: retried or dead-lettered as usual |
//! | it commits, the handler returns `Ok` | row and receipt deleted in the settlement's transaction |
//! | it commits, the handler returns an error | a receipt means done: acknowledged (logged at `WARN`), never retried nor dead-lettered |
//! | it commits, the process dies before the settlement | the next claim finds the receipt: row and receipt deleted, the handler **not** run again |
//! | (PostgreSQL) a consumer lost its claim while its handler ran, and another handled the row | the late receipt fails (one receipt per row, and it references a row still there): its transaction rolls back with its effect |
//!
//! Record a receipt only for a message whose effect the transaction
//! commits: once it is committed the message is done, so a message to
//! retry (a prerequisite missing) or to dead-letter must not record it. On
//! the other buses [`MessageContext::durable_receipt`](crate::MessageContext::durable_receipt)
//! is `None` and recording does nothing, so the same handler runs
//! everywhere (idempotent there, as before).
//!
//! Events a handler raises go through the transactional
//! [`outbox`](crate::outbox) of the same database, whose relay publishes
//! them on this bus: into the same table.
//!
//! # Shutting down
//!
//! [`DurableBus::shutdown`] stops accepting commands, runs what is due
//! until the queue has nothing due or the drain timeout passes, and stops
//! consuming. Nothing is
//! dead-lettered for a shutdown: what is left (a retry scheduled later)
//! stays in the table for the next start.

#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::StreamExt;
use tokio::{
    sync::{mpsc, oneshot, watch, Mutex, Notify},
    task::JoinHandle,
    time::Instant,
};
use uuid::Uuid;

use crate::{
    bus::BoxFuture,
    dead_letter::dead_letter,
    dead_letter_ops::Redelivery,
    settlement::Settlement,
    transport::{settle_span, RegisteredHandler},
    CircuitBreaker, CommandBus, DeadLetterSink, DispatchError, Envelope, EventBus, FailureKind,
    HandlerError, Handlers, InMemoryDeadLetters, Receipt, RetryPolicy,
};

/// Settings of a [`DurableBus`].
#[derive(Debug, Clone)]
pub struct DurableBusConfig {
    /// Rows claimed per batch.
    pub batch_size: usize,
    /// Handlers running at once, within a batch.
    pub concurrency: usize,
    /// Retries of failing handlers.
    pub retry: RetryPolicy,
    /// How often the consumer looks for due rows when nothing woke it
    /// (rows inserted by another process without a notification, retries
    /// coming due).
    pub poll_interval: Duration,
    /// How long [`DurableBus::shutdown`] keeps running due rows before it
    /// stops (what is left stays in the table).
    pub drain_timeout: Duration,
    /// Messages inserted in one transaction at most (group commit).
    pub max_group_commit: usize,
    /// Insert transactions in flight at once, each on its own connection
    /// (PostgreSQL; SQLite has one writer and always uses one): while one
    /// group commits, the next one is inserted.
    pub writers: usize,
}

impl Default for DurableBusConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            concurrency: 16,
            retry: RetryPolicy::default(),
            poll_interval: Duration::from_millis(500),
            drain_timeout: Duration::from_secs(30),
            max_group_commit: 512,
            writers: 4,
        }
    }
}

/// A message to insert: an envelope for one handler.
#[derive(Debug, Clone)]
pub(crate) struct NewMessage {
    pub(crate) envelope: Arc<Envelope>,
    /// The envelope's JSON text, written by the sender (not by the one
    /// writer, which every send waits for).
    pub(crate) json: Arc<str>,
    /// `None` for a command's handler, else the subscriber's name.
    pub(crate) subscriber: Option<String>,
}

/// The JSON text of `envelope`, whose handler is of `message_type`.
fn encode(envelope: &Envelope, message_type: &'static str) -> Result<Arc<str>, DispatchError> {
    serde_json::to_string(envelope)
        .map(Arc::from)
        .map_err(|source| {
            DispatchError::Encode(crate::EncodeError {
                message_type,
                source,
            })
        })
}

/// A row claimed from the queue.
#[derive(Debug, Clone)]
pub(crate) struct QueuedMessage {
    /// The row's id.
    pub(crate) row: i64,
    pub(crate) message_id: Uuid,
    pub(crate) message_type: String,
    pub(crate) subscriber: Option<String>,
    /// Delivery attempt this run is (1-based).
    pub(crate) attempt: u32,
    /// Whether a handler's transaction recorded the row's receipt: the
    /// message is done, and its row only waits to be deleted.
    pub(crate) receipted: bool,
    /// The envelope, or the stored text when it cannot be read as one.
    pub(crate) envelope: Result<Arc<Envelope>, String>,
}

/// What becomes of a claimed row.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Delete it.
    Ack,
    /// Run it again as the next attempt after `after`.
    Retry { after: Duration, error: String },
    /// Move it to `bus_dead_letters`.
    DeadLetter { reason: String },
    /// Leave it as it is (a dependency is down).
    Keep,
}

/// A claimed row and what becomes of it.
#[derive(Debug)]
pub(crate) struct Settled {
    pub(crate) message: QueuedMessage,
    pub(crate) outcome: Outcome,
}

/// A dead letter as the `bus_dead_letters` row stores it.
pub(crate) struct DeadLetterRow<'a> {
    pub(crate) message_id: Uuid,
    pub(crate) message_type: &'a str,
    pub(crate) subscriber: Option<&'a str>,
    pub(crate) reason: &'a str,
    pub(crate) attempts: u32,
    /// The envelope's JSON text.
    pub(crate) envelope: String,
}

impl<'a> DeadLetterRow<'a> {
    fn of(message: &'a QueuedMessage, reason: &'a str) -> Self {
        Self {
            message_id: message.message_id,
            message_type: &message.message_type,
            subscriber: message.subscriber.as_deref(),
            reason,
            attempts: message.attempt,
            envelope: match &message.envelope {
                Ok(envelope) => {
                    serde_json::to_string(envelope.as_ref()).unwrap_or_else(|_| "null".to_owned())
                }
                Err(raw) => raw.clone(),
            },
        }
    }
}

/// A batch of claimed rows, and how to settle them.
pub(crate) type Claim = (Vec<QueuedMessage>, Box<dyn Settle>);

/// Applies the settlements of a claimed batch (and releases the claim).
pub(crate) trait Settle: Send {
    /// Deletes, reschedules or dead-letters each row, in one transaction,
    /// and deletes the receipts of the rows settled. A row whose receipt
    /// was recorded is deleted (acknowledged) whatever its outcome: its
    /// handler's transaction committed the effect. Answers those rows.
    fn settle(
        self: Box<Self>,
        settled: Vec<Settled>,
    ) -> BoxFuture<'static, Result<Vec<i64>, sqlx::Error>>;
}

/// The queue table on one database.
pub(crate) trait Queue: Send + Sync + 'static {
    /// Inserts `messages` in one transaction and tells consumers.
    fn insert<'a>(&'a self, messages: &'a [NewMessage]) -> BoxFuture<'a, Result<(), sqlx::Error>>;
    /// Claims up to `limit` due rows, oldest first.
    fn claim(&self, limit: usize) -> BoxFuture<'_, Result<Claim, sqlx::Error>>;
    /// Stores a dead letter for a message never queued (a replay to a
    /// handler this bus does not have).
    fn dead_letter<'a>(&'a self, row: DeadLetterRow<'a>) -> BoxFuture<'a, Result<(), sqlx::Error>>;
    /// Wakes `wake` whenever another process inserted rows (PostgreSQL's
    /// `LISTEN`), until `stop` flips.
    fn listen(&self, wake: Arc<Notify>, stop: watch::Receiver<bool>) -> Option<JoinHandle<()>>;
    /// How many inserts may run at once (SQLite: one, its one writer).
    fn max_writers(&self) -> usize;
}

/// How many transactions the writer of a [`DurableBus`] committed since it
/// started, and how many messages they held: `messages / transactions` is
/// the mean group size concurrent sends reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommits {
    /// Insert transactions committed.
    pub transactions: u64,
    /// Messages (rows) those transactions inserted.
    pub messages: u64,
}

/// The writer's running counts behind [`GroupCommits`].
#[derive(Debug, Default)]
struct CommitCounters {
    transactions: AtomicU64,
    messages: AtomicU64,
}

/// A group of sends waiting for their commit.
struct PendingInsert {
    messages: Vec<NewMessage>,
    done: oneshot::Sender<Result<(), String>>,
}

/// A bus whose queue is a table of the application's database: see the
/// [module documentation](self).
///
/// Build it with [`DurableBus::postgres`] or [`DurableBus::sqlite`], then
/// [`DurableBusBuilder::start`].
#[derive(Clone)]
pub struct DurableBus {
    inner: Arc<Inner>,
}

struct Inner {
    queue: Arc<dyn Queue>,
    handlers: Handlers,
    config: DurableBusConfig,
    breaker: CircuitBreaker,
    dead_letters: Arc<dyn DeadLetterSink>,
    inserts: mpsc::Sender<PendingInsert>,
    commits: Arc<CommitCounters>,
    closing: AtomicBool,
    /// Wakes the consumer: a send committed, or shutdown began.
    wake: Arc<Notify>,
    /// Flips once the consumer must stop even with rows due.
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for DurableBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableBus")
            .field("config", &self.inner.config)
            .field("breaker", &self.inner.breaker)
            .finish_non_exhaustive()
    }
}

/// Assembles a [`DurableBus`].
pub struct DurableBusBuilder {
    queue: Arc<dyn Queue>,
    handlers: Handlers,
    config: DurableBusConfig,
    breaker: CircuitBreaker,
    dead_letters: Option<Arc<dyn DeadLetterSink>>,
}

impl std::fmt::Debug for DurableBusBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableBusBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DurableBus {
    /// A bus on the `bus_messages` table of a PostgreSQL database.
    #[cfg(feature = "postgres")]
    pub fn postgres(pool: sqlx::PgPool, handlers: Handlers) -> DurableBusBuilder {
        DurableBusBuilder::new(Arc::new(postgres::PostgresQueue::new(pool)), handlers)
    }

    /// A bus on the `bus_messages` table of an SQLite database; `pool`
    /// should be the application's writing pool (one connection).
    #[cfg(feature = "sqlite")]
    pub fn sqlite(pool: sqlx::SqlitePool, handlers: Handlers) -> DurableBusBuilder {
        DurableBusBuilder::new(Arc::new(sqlite::SqliteQueue::new(pool)), handlers)
    }

    /// The name of the queue of `message_type`'s command handler
    /// (`subscriber: None`) or of one of its subscribers, as
    /// [`PausedQueues`](crate::PausedQueues) and the dead-letter tooling
    /// name it: `command.{message_type}`, `event.{message_type}.{subscriber}`.
    pub fn queue_name(message_type: &str, subscriber: Option<&str>) -> String {
        crate::dead_letter_table::queue_label(message_type, subscriber)
    }

    /// The queues this bus consumes, one per command handler and per
    /// event subscriber, named as [`queue_name`](Self::queue_name) does.
    pub fn queues(&self) -> Vec<String> {
        let handlers = &self.inner.handlers;
        let commands = handlers
            .commands()
            .into_iter()
            .map(|handler| Self::queue_name(handler.message_type(), None));
        let subscribers = handlers.subscriptions().into_iter().map(|subscription| {
            Self::queue_name(
                subscription.handler.message_type(),
                Some(&subscription.subscriber),
            )
        });
        commands.chain(subscribers).collect()
    }

    /// The breaker the consumer pauses behind.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.inner.breaker
    }

    /// The group commits of this bus's writer so far.
    pub fn group_commits(&self) -> GroupCommits {
        let commits = &self.inner.commits;
        GroupCommits {
            transactions: commits.transactions.load(Ordering::Relaxed),
            messages: commits.messages.load(Ordering::Relaxed),
        }
    }

    /// Why the consumer is paused (a dependency down), or `None`.
    pub fn paused(&self) -> Option<String> {
        self.inner.breaker.paused()
    }

    /// Stops accepting commands ([`DispatchError::ShuttingDown`]), runs
    /// what is due until nothing is (or the drain timeout passes), then
    /// stops the consumer. Rows left (retries scheduled later) stay for the
    /// next start. Events are still accepted afterwards (an outbox relay
    /// flushing at shutdown): they wait in the table for the next start.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.closing.store(true, Ordering::SeqCst);
        inner.wake.notify_one();
        let mut tasks = std::mem::take(&mut *inner.tasks.lock().await);
        let deadline = Instant::now() + inner.config.drain_timeout;
        if !tasks.is_empty() {
            let mut consumer = tasks.remove(0);
            if tokio::time::timeout_at(deadline, &mut consumer)
                .await
                .is_err()
            {
                tracing::warn!("drain timeout reached; rows still due stay for the next start");
                inner.stop.send_replace(true);
                let _ = consumer.await;
            }
        }
        inner.stop.send_replace(true);
        for task in tasks {
            let _ = task.await;
        }
        tracing::info!("durable bus stopped");
    }

    async fn enqueue(&self, messages: Vec<NewMessage>) -> Result<(), DispatchError> {
        if messages.is_empty() {
            return Ok(());
        }
        let (done, committed) = oneshot::channel();
        self.inner
            .inserts
            .send(PendingInsert { messages, done })
            .await
            .map_err(|_| DispatchError::ShuttingDown)?;
        match committed.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(DispatchError::Unavailable {
                reason,
                source: None,
            }),
            Err(_) => Err(DispatchError::ShuttingDown),
        }
    }

    /// A replayed dead letter goes back to the one handler it names; a
    /// target this bus does not have is dead-lettered again with why.
    async fn redeliver(
        &self,
        envelope: Envelope,
        target: Result<Redelivery, String>,
    ) -> Result<(), DispatchError> {
        let handlers = &self.inner.handlers;
        let (subscriber, known, reason) = match &target {
            Ok(Redelivery::Command) => (
                None,
                handlers.command(&envelope.message_type),
                "replayed to a command handler this bus does not have",
            ),
            Ok(Redelivery::Subscriber(name)) => (
                Some(name.clone()),
                handlers
                    .subscribers(&envelope.message_type)
                    .iter()
                    .find(|s| &s.subscriber == name)
                    .map(|s| &s.handler),
                "replayed to a subscriber this bus does not have",
            ),
            Err(_) => (None, None, "replayed with an unreadable redelivery target"),
        };
        if let Some(handler) = known {
            tracing::info!(
                message_id = %envelope.id,
                message_type = %envelope.message_type,
                subscriber = subscriber.as_deref().unwrap_or("-"),
                "replayed dead letter queued"
            );
            let json = encode(&envelope, handler.message_type())?;
            return self
                .enqueue(vec![NewMessage {
                    envelope: Arc::new(envelope),
                    json,
                    subscriber,
                }])
                .await;
        }
        let message = QueuedMessage {
            row: 0,
            message_id: envelope.id,
            message_type: envelope.message_type.clone(),
            subscriber,
            attempt: 0,
            receipted: false,
            envelope: Ok(Arc::new(envelope)),
        };
        self.inner
            .queue
            .dead_letter(DeadLetterRow::of(&message, reason))
            .await
            .map_err(|error| DispatchError::Unavailable {
                reason: error.to_string(),
                source: Some(Box::new(error)),
            })?;
        report_dead_letter(&self.inner, &message, reason);
        Ok(())
    }
}

impl DurableBusBuilder {
    fn new(queue: Arc<dyn Queue>, handlers: Handlers) -> Self {
        Self {
            queue,
            handlers,
            config: DurableBusConfig::default(),
            breaker: CircuitBreaker::default(),
            dead_letters: None,
        }
    }

    /// Batch size, concurrency, retries, poll interval, drain timeout
    /// (default: [`DurableBusConfig::default`]).
    pub fn config(mut self, config: DurableBusConfig) -> Self {
        self.config = config;
        self
    }

    /// Told about every dead letter after the bus moved it to the
    /// `bus_dead_letters` table itself (default: an
    /// [`InMemoryDeadLetters`]). Give it an in-memory sink, not a
    /// [`DatabaseDeadLetters`](crate::DatabaseDeadLetters), which would
    /// store each a second time.
    pub fn dead_letters(mut self, sink: Arc<dyn DeadLetterSink>) -> Self {
        self.dead_letters = Some(sink);
        self
    }

    /// The breaker the consumer pauses behind on infrastructure failures;
    /// give it a probe of the database.
    pub fn breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = breaker;
        self
    }

    /// Starts the writer, the consumer and (PostgreSQL) the listener on the
    /// current tokio runtime.
    pub fn start(self) -> DurableBus {
        let mut config = self.config;
        config.batch_size = config.batch_size.max(1);
        config.concurrency = config.concurrency.max(1);
        config.max_group_commit = config.max_group_commit.max(1);
        let (inserts, pending) = mpsc::channel(config.max_group_commit * 4);
        let wake = Arc::new(Notify::new());
        let (stop, stopped) = watch::channel(false);
        let inner = Arc::new(Inner {
            queue: self.queue,
            handlers: self.handlers,
            config,
            breaker: self.breaker,
            dead_letters: self
                .dead_letters
                .unwrap_or_else(|| Arc::new(InMemoryDeadLetters::default())),
            inserts,
            commits: Arc::new(CommitCounters::default()),
            closing: AtomicBool::new(false),
            wake: wake.clone(),
            stop,
            tasks: Mutex::new(Vec::new()),
        });
        // The writers live as long as the bus: events relayed after a
        // shutdown are still queued, for the next start.
        let writers = inner
            .config
            .writers
            .clamp(1, inner.queue.max_writers().max(1));
        let pending = Arc::new(Mutex::new(pending));
        for _ in 0..writers {
            tokio::spawn(write(
                inner.queue.clone(),
                pending.clone(),
                wake.clone(),
                inner.config.max_group_commit,
                inner.commits.clone(),
            ));
        }
        let mut tasks = vec![tokio::spawn(consume(inner.clone()))];
        if let Some(listener) = inner.queue.listen(wake, stopped) {
            tasks.push(listener);
        }
        if let Ok(mut slot) = inner.tasks.try_lock() {
            *slot = tasks;
        }
        DurableBus { inner }
    }
}

impl CommandBus for DurableBus {
    fn send_envelope(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
        Box::pin(async move {
            let Some(handler) = self.inner.handlers.command(&envelope.message_type) else {
                return Err(DispatchError::NoHandler {
                    message_type: envelope.message_type,
                });
            };
            if self.inner.closing.load(Ordering::SeqCst) {
                return Err(DispatchError::ShuttingDown);
            }
            let message_type = handler.message_type();
            let json = encode(&envelope, message_type)?;
            let sent = self
                .enqueue(vec![NewMessage {
                    envelope: Arc::new(envelope),
                    json,
                    subscriber: None,
                }])
                .await;
            let outcome = if sent.is_ok() { "sent" } else { "unavailable" };
            crate::metrics::record_sent(message_type, outcome, None);
            sent
        })
    }
}

impl EventBus for DurableBus {
    /// Inserts one row per subscriber of the event; a replayed dead letter
    /// (header [`REDELIVER_TO`](crate::dead_letter_ops::REDELIVER_TO)) gets
    /// one row for the one handler it names, as a first attempt.
    fn publish_envelope(&self, mut envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
        Box::pin(async move {
            if let Some(target) = Redelivery::take(&mut envelope) {
                return self.redeliver(envelope, target).await;
            }
            let subscribers = self.inner.handlers.subscribers(&envelope.message_type);
            let Some(first) = subscribers.first() else {
                return Ok(());
            };
            // One JSON text for every subscriber's row.
            let json = encode(&envelope, first.handler.message_type())?;
            let envelope = Arc::new(envelope);
            let messages = subscribers
                .iter()
                .map(|subscription| NewMessage {
                    envelope: envelope.clone(),
                    json: json.clone(),
                    subscriber: Some(subscription.subscriber.clone()),
                })
                .collect();
            self.enqueue(messages).await
        })
    }
}

/// A writer: inserts every send waiting in one transaction (group
/// commit), answers each, wakes the consumer. Several writers share the
/// queue of sends: one takes a group while the others commit theirs.
async fn write(
    queue: Arc<dyn Queue>,
    pending: Arc<Mutex<mpsc::Receiver<PendingInsert>>>,
    wake: Arc<Notify>,
    max_group_commit: usize,
    commits: Arc<CommitCounters>,
) {
    loop {
        let group = {
            let mut pending = pending.lock().await;
            let Some(first) = pending.recv().await else {
                break;
            };
            // Senders woken by the last commit are sending again: let them
            // run before the group is closed.
            tokio::task::yield_now().await;
            let mut count = first.messages.len();
            let mut group = vec![first];
            while count < max_group_commit {
                match pending.try_recv() {
                    Ok(next) => {
                        count += next.messages.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            group
        };
        let messages: Vec<NewMessage> = group
            .iter()
            .flat_map(|insert| insert.messages.iter().cloned())
            .collect();
        let result = queue
            .insert(&messages)
            .await
            .map_err(|error| error.to_string());
        if let Err(error) = &result {
            tracing::warn!(%error, messages = messages.len(), "cannot queue messages");
        } else {
            commits.transactions.fetch_add(1, Ordering::Relaxed);
            commits
                .messages
                .fetch_add(messages.len() as u64, Ordering::Relaxed);
            wake.notify_one();
        }
        for insert in group {
            let _ = insert.done.send(result.clone());
        }
    }
}

/// The consumer: claims due rows in batches, runs and settles them, until
/// the bus shuts down.
async fn consume(inner: Arc<Inner>) {
    let mut stop = inner.stop.subscribe();
    let mut next_retry: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            () = inner.breaker.closed() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        let claimed = inner.queue.claim(inner.config.batch_size).await;
        let (messages, settle) = match claimed {
            Ok(claim) => claim,
            Err(error) => {
                database_failed(&inner, &error, "cannot claim messages");
                idle(&inner, &mut stop, None).await;
                continue;
            }
        };
        if messages.is_empty() {
            drop(settle);
            if inner.closing.load(Ordering::SeqCst) {
                break;
            }
            let until = next_retry.take().filter(|at| *at > Instant::now());
            idle(&inner, &mut stop, until).await;
            continue;
        }
        // A row whose receipt is committed was handled: its handler's
        // transaction committed, the process died before the row was
        // deleted. It is acknowledged without running the handler again.
        let (done, due): (Vec<QueuedMessage>, Vec<QueuedMessage>) =
            messages.into_iter().partition(|message| message.receipted);
        let mut settled: Vec<Settled> = done
            .into_iter()
            .map(|message| {
                tracing::info!(
                    message_id = %message.message_id,
                    message_type = %message.message_type,
                    subscriber = message.subscriber.as_deref().unwrap_or("-"),
                    "message already handled (its receipt is committed): acknowledged, not run again"
                );
                Settled {
                    message,
                    outcome: Outcome::Ack,
                }
            })
            .collect();
        let ran: Vec<Settled> = futures::stream::iter(group(&inner, due))
            .map(|unit| run(&inner, unit))
            .buffer_unordered(inner.config.concurrency)
            .flat_map(futures::stream::iter)
            .collect()
            .await;
        settled.extend(ran);
        let retry_at = settled
            .iter()
            .filter_map(|settled| match &settled.outcome {
                Outcome::Retry { after, .. } => Some(Instant::now() + *after),
                _ => None,
            })
            .min();
        next_retry = match (next_retry, retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let reports: Vec<_> = settled
            .iter()
            .filter_map(|settled| match &settled.outcome {
                Outcome::DeadLetter { reason } => Some((settled.message.clone(), reason.clone())),
                _ => None,
            })
            .collect();
        match settle.settle(settled).await {
            Ok(receipted) => {
                for (message, reason) in reports {
                    if receipted.contains(&message.row) {
                        tracing::warn!(
                            message_id = %message.message_id,
                            message_type = %message.message_type,
                            error = %reason,
                            "handler failed after its transaction recorded the receipt: \
                             its effect is committed, so the message is acknowledged, not dead-lettered"
                        );
                    } else {
                        report_dead_letter(&inner, &message, &reason);
                    }
                }
            }
            Err(error) => database_failed(
                &inner,
                &error,
                "cannot settle a batch; its messages run again",
            ),
        }
    }
}

/// Sleeps until woken, `until` (a retry coming due) or the poll interval.
async fn idle(inner: &Inner, stop: &mut watch::Receiver<bool>, until: Option<Instant>) {
    let poll = Instant::now() + inner.config.poll_interval;
    let wake_at = until.map_or(poll, |until| until.min(poll));
    tokio::select! {
        () = inner.wake.notified() => {}
        () = tokio::time::sleep_until(wake_at) => {}
        _ = stop.wait_for(|stop| *stop) => {}
    }
}

/// Logs a failed claim or settlement; the database being away pauses the
/// consumer behind its breaker.
fn database_failed(inner: &Inner, error: &sqlx::Error, what: &str) {
    if crate::database_failure_kind(error) == FailureKind::Infrastructure {
        inner.breaker.trip(&error.to_string());
    } else {
        tracing::error!(%error, "{what}");
    }
}

/// Splits a claimed batch into what runs as one unit: the rows of a
/// [`BatchHandler`](crate::BatchHandler) together (per handler, at most its
/// [`BatchConfig::max_messages`](crate::BatchConfig::max_messages) each), every
/// other row alone. Rows keep their claimed order within a unit.
fn group(inner: &Inner, messages: Vec<QueuedMessage>) -> Vec<Vec<QueuedMessage>> {
    let mut units: Vec<Vec<QueuedMessage>> = Vec::with_capacity(messages.len());
    // The unit each batch handler is filling, by message type and subscriber.
    let mut filling: HashMap<(String, Option<String>), usize> = HashMap::new();
    for message in messages {
        let config = match (&message.envelope, handler_of(inner, &message)) {
            (Ok(_), Some(handler)) => handler.batch_config(),
            _ => None,
        };
        let Some(config) = config else {
            units.push(vec![message]);
            continue;
        };
        let key = (message.message_type.clone(), message.subscriber.clone());
        match filling.get(&key) {
            Some(&unit) if units[unit].len() < config.max_messages => units[unit].push(message),
            _ => {
                filling.insert(key, units.len());
                units.push(vec![message]);
            }
        }
    }
    units
}

/// Runs one unit of claimed rows (one row, or a batch handler's rows in one
/// call through [`RegisteredHandler::invoke_batch_and_decide`]) and decides
/// what becomes of each row.
async fn run(inner: &Inner, unit: Vec<QueuedMessage>) -> Vec<Settled> {
    if unit.len() > 1 {
        if let Some(handler) = unit.first().and_then(|first| handler_of(inner, first)) {
            let deliveries: Vec<_> = unit
                .iter()
                .filter_map(|message| {
                    let envelope = message.envelope.as_ref().ok()?;
                    Some((envelope.clone(), message.attempt))
                })
                .collect();
            let receipts: Vec<_> = unit
                .iter()
                .map(|message| Some(Receipt::new(message.row)))
                .collect();
            // `group` only batches readable rows of one handler.
            if deliveries.len() == unit.len() {
                let decided = handler
                    .invoke_batch_and_decide_receipted(&deliveries, &receipts, &inner.config.retry)
                    .await;
                return unit
                    .into_iter()
                    .zip(decided)
                    .map(|(message, (result, settlement))| {
                        let outcome = outcome_of(inner, &message, result, settlement);
                        Settled { message, outcome }
                    })
                    .collect();
            }
        }
    }
    let mut settled = Vec::with_capacity(unit.len());
    for message in unit {
        settled.push(run_one(inner, message).await);
    }
    settled
}

/// Runs one claimed row's handler and decides what becomes of the row.
async fn run_one(inner: &Inner, message: QueuedMessage) -> Settled {
    let outcome = match (&message.envelope, handler_of(inner, &message)) {
        (Err(raw), _) => Outcome::DeadLetter {
            reason: format!("unreadable envelope: {}", truncate(raw)),
        },
        (Ok(_), None) => Outcome::DeadLetter {
            reason: match &message.subscriber {
                Some(name) => format!("no subscriber {name} of {}", message.message_type),
                None => format!("no handler registered for {}", message.message_type),
            },
        },
        (Ok(envelope), Some(handler)) => {
            let (result, settlement) = handler
                .invoke_and_decide_receipted(
                    envelope.clone(),
                    message.attempt,
                    &inner.config.retry,
                    Some(Receipt::new(message.row)),
                )
                .await;
            outcome_of(inner, &message, result, settlement)
        }
    };
    Settled { message, outcome }
}

/// What the settlement of a row's run does to its row.
fn outcome_of(
    inner: &Inner,
    message: &QueuedMessage,
    result: Result<(), HandlerError>,
    settlement: Settlement,
) -> Outcome {
    // Only rows with a readable envelope reach a handler and come here.
    let _settling = message
        .envelope
        .as_ref()
        .ok()
        .map(|envelope| settle_span(envelope).entered());
    match settlement {
        Settlement::Ack => Outcome::Ack,
        Settlement::Retry { after } => {
            let error = result.err().map(|e| e.to_string()).unwrap_or_default();
            tracing::warn!(
                message_id = %message.message_id,
                message_type = %message.message_type,
                subscriber = message.subscriber.as_deref().unwrap_or("-"),
                attempt = message.attempt,
                retry_in_ms = after.as_millis() as u64,
                %error,
                "handler failed, retrying"
            );
            Outcome::Retry { after, error }
        }
        Settlement::Suspend { reason } => {
            tracing::warn!(
                message_id = %message.message_id,
                message_type = %message.message_type,
                attempt = message.attempt,
                error = %reason,
                "dependency unavailable: message kept, attempt not counted"
            );
            inner.breaker.trip(&reason);
            Outcome::Keep
        }
        Settlement::DeadLetter { reason } => Outcome::DeadLetter { reason },
    }
}

fn handler_of<'a>(inner: &'a Inner, message: &QueuedMessage) -> Option<&'a RegisteredHandler> {
    let handlers = &inner.handlers;
    match &message.subscriber {
        None => handlers.command(&message.message_type),
        Some(name) => handlers
            .subscribers(&message.message_type)
            .iter()
            .find(|subscription| &subscription.subscriber == name)
            .map(|subscription| &subscription.handler),
    }
}

/// Logs a dead letter (at `ERROR`, with its payload) and tells the sink.
fn report_dead_letter(inner: &Inner, message: &QueuedMessage, reason: &str) {
    match &message.envelope {
        Ok(envelope) => settle_span(envelope).in_scope(|| {
            dead_letter(
                inner.dead_letters.as_ref(),
                envelope,
                message.subscriber.as_deref(),
                reason,
                message.attempt,
            )
        }),
        Err(raw) => tracing::error!(
            message_id = %message.message_id,
            message_type = %message.message_type,
            error = reason,
            envelope = %raw,
            "message dead-lettered"
        ),
    }
}

fn truncate(text: &str) -> String {
    text.chars().take(200).collect()
}
