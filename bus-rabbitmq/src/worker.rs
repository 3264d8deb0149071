//! [`RabbitWorker`]: the consuming side. Runs handlers, acknowledges,
//! retries, dead-letters, reconnects and shuts down gracefully.

use std::{future::Future, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use bus_core::{HandlerError, Handlers, RegisteredHandler, RetryPolicy};
use futures::{stream::FuturesUnordered, FutureExt, StreamExt};
use lapin::{
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
        BasicQosOptions, ConfirmSelectOptions,
    },
    types::{AMQPValue, FieldTable, LongString},
    Channel, Connection, ConnectionProperties, Consumer,
};
use tokio::{sync::Semaphore, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{
    confirm::{publish_confirmed, PublishFailure},
    naming::short,
    wire::{self, headers},
    Naming, RabbitConfig, RabbitError, Topology,
};

/// Consumes every command queue and subscriber queue of a [`Handlers`] set.
///
/// Per consumed queue: one consumer channel with `basic.qos(prefetch)` and
/// manual acknowledgements, at most `concurrency` handlers at once, and one
/// confirm-mode channel for retries and dead letters, carrying one
/// unconfirmed copy at a time (so that a copy the broker returns as
/// unroutable is never taken for another one's success). For each delivery:
///
/// 1. the [`bus_core::Envelope`] is rebuilt from the AMQP properties and body
///    ([`wire::decode`]); a delivery that cannot be decoded, or whose type has
///    no handler on that queue, is dead-lettered at once;
/// 2. the handler runs ([`RegisteredHandler::invoke`]) with the attempt
///    number of the `x-attempt` header;
/// 3. `Ok`: the delivery is acknowledged, strictly after the handler returned;
/// 4. [`HandlerError::Retryable`] with attempts left: a copy (same message id,
///    `x-attempt` + 1, `x-last-error`) is published to the delay queue of that
///    attempt's backoff and confirmed, then the delivery is acknowledged;
/// 5. otherwise (retries exhausted, permanent, decode, unknown type, panic on
///    the last attempt): a copy with `x-error`, `x-attempts`,
///    `x-original-queue` and `x-dead-lettered-at` is published to the
///    queue's `.dlq` and confirmed, then the delivery is acknowledged.
///
/// If a retry or dead-letter publish fails, the delivery is rejected with
/// `requeue`: it comes back, nothing is lost. A handler may therefore see a
/// message more than once (at-least-once): handlers must be idempotent.
///
/// When the connection drops, the worker logs it, waits (exponential backoff
/// between `reconnect_min_backoff` and `reconnect_max_backoff`), reconnects,
/// re-declares the topology and consumes again, without a restart.
#[derive(Debug)]
pub struct RabbitWorker {
    config: RabbitConfig,
    topology: Topology,
    routes: Vec<Route>,
}

/// One consumed queue and the handler of its messages.
#[derive(Debug, Clone)]
struct Route {
    queue: String,
    handler: RegisteredHandler,
    subscriber: Option<String>,
}

/// What every handling task of one queue needs.
#[derive(Clone)]
struct QueueContext {
    route: Route,
    policy: RetryPolicy,
    confirm_timeout: Duration,
    failure_pause: Duration,
    publish_channel: Channel,
    /// One retry or dead-letter copy unconfirmed on `publish_channel` at a
    /// time: lapin hands a returned message to whichever confirm of the
    /// channel completes next, so concurrent copies could take each other's
    /// refusal, and a copy the broker could not route would be acknowledged.
    publish_turn: Arc<tokio::sync::Mutex<()>>,
}

/// How a consuming session ended.
enum SessionEnd {
    /// Shutdown was requested; consumers are cancelled.
    Shutdown(Vec<Channel>),
    /// The connection or a channel failed.
    Lost(String),
}

impl RabbitWorker {
    /// A worker for every command and subscription of `handlers`, named and
    /// declared after `config` ([`RabbitConfig::topology`]). Does not connect
    /// yet: [`RabbitWorker::run`] does.
    pub fn new(handlers: &Handlers, config: RabbitConfig) -> Result<Self, RabbitError> {
        config
            .amqp_url
            .parse::<lapin::uri::AMQPUri>()
            .map_err(|error| RabbitError::InvalidConfig(format!("amqp_url: {error}")))?;
        if config.concurrency == 0 {
            return Err(RabbitError::InvalidConfig(
                "concurrency must be at least 1".to_owned(),
            ));
        }
        if config.prefetch == 0 {
            return Err(RabbitError::InvalidConfig(
                "prefetch must be at least 1 (0 means unlimited to the broker)".to_owned(),
            ));
        }
        let topology = config.topology(handlers);
        let naming = topology.naming();
        let commands = handlers.commands().into_iter().map(|handler| Route {
            queue: naming.command_queue(handler.message_type()),
            handler: handler.clone(),
            subscriber: None,
        });
        let subscribers = handlers
            .subscriptions()
            .into_iter()
            .map(|subscription| Route {
                queue: naming.subscriber_queue(subscription.event_type, &subscription.subscriber),
                handler: subscription.handler.clone(),
                subscriber: Some(subscription.subscriber.clone()),
            });
        let routes: Vec<Route> = commands.chain(subscribers).collect();
        for route in &routes {
            short(&Naming::dead_letter_queue(&route.queue))?;
            for delay in topology.retry_delays() {
                short(&Naming::retry_queue(&route.queue, *delay))?;
            }
        }
        Ok(Self {
            config,
            topology,
            routes,
        })
    }

    /// What this worker declares.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Consumes until `shutdown` completes, reconnecting as often as needed.
    ///
    /// On shutdown: consumers are cancelled (the broker stops delivering),
    /// handlers already running finish and their messages are acknowledged
    /// (or retried, or dead-lettered), then channels and the connection are
    /// closed and `run` returns. Deliveries prefetched but not yet started
    /// are released to the broker unacknowledged, i.e. requeued.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), RabbitError> {
        let cancel = CancellationToken::new();
        let work = self.run_until_cancelled(cancel.clone());
        tokio::pin!(work);
        tokio::pin!(shutdown);
        tokio::select! {
            result = &mut work => return result,
            () = &mut shutdown => {
                tracing::info!("worker shutdown requested: cancelling consumers, draining handlers");
            }
        }
        cancel.cancel();
        work.await
    }

    async fn run_until_cancelled(&self, cancel: CancellationToken) -> Result<(), RabbitError> {
        let tracker = TaskTracker::new();
        let mut backoff = self.config.reconnect_min_backoff;
        loop {
            let connected = tokio::select! {
                () = cancel.cancelled() => break,
                connected = self.connect() => connected,
            };
            let session_started = Instant::now();
            match connected {
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "worker cannot reach the broker");
                }
                Ok(connection) => match self.serve(&connection, &cancel, &tracker).await {
                    SessionEnd::Shutdown(channels) => {
                        tracker.close();
                        tracker.wait().await;
                        for channel in channels {
                            let _ = channel.close(200, "OK".into()).await;
                        }
                        let _ = connection.close(200, "OK".into()).await;
                        tracing::info!(
                            "worker stopped: in-flight messages settled, connection closed"
                        );
                        return Ok(());
                    }
                    SessionEnd::Lost(reason) => {
                        tracing::warn!(%reason, retry_in = ?backoff, "worker lost the broker, reconnecting");
                        if connection.status().connected() {
                            let _ = connection.close(200, "reconnecting".into()).await;
                        }
                        // A session that lasted resets the backoff; one that
                        // failed at once (e.g. consume refused) keeps doubling it.
                        if session_started.elapsed() >= self.config.reconnect_max_backoff {
                            backoff = self.config.reconnect_min_backoff;
                        }
                    }
                },
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.config.reconnect_max_backoff.max(backoff));
        }
        // Shutdown while disconnected: wait for handlers of earlier sessions
        // (their acks fail; the broker redelivers those messages).
        tracker.close();
        tracker.wait().await;
        tracing::info!("worker stopped");
        Ok(())
    }

    /// Opens a connection and declares the topology on it.
    async fn connect(&self) -> Result<Connection, RabbitError> {
        let properties = ConnectionProperties::default().with_connection_name(
            format!("{} (worker)", self.config.connection_name)
                .as_str()
                .into(),
        );
        let connection = tokio::time::timeout(
            self.config.connect_timeout,
            Connection::connect(&self.config.amqp_url, properties),
        )
        .await
        .map_err(|elapsed| RabbitError::Connect(Box::new(elapsed)))?
        .map_err(|error| RabbitError::Connect(Box::new(error)))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(RabbitError::Channel)?;
        let declared = self.topology.declare(&channel).await;
        let _ = channel.close(200, "OK".into()).await;
        if let Err(error) = declared {
            let _ = connection.close(200, "OK".into()).await;
            return Err(error);
        }
        tracing::info!(
            namespace = self.topology.naming().namespace(),
            queues = self.routes.len(),
            "worker connected, topology declared"
        );
        Ok(connection)
    }

    /// Consumes every queue on `connection` until shutdown or a failure.
    async fn serve(
        &self,
        connection: &Connection,
        cancel: &CancellationToken,
        tracker: &TaskTracker,
    ) -> SessionEnd {
        let session = cancel.child_token();
        let mut channels = Vec::new();
        let mut loops = FuturesUnordered::new();
        for route in &self.routes {
            match self.start_consumer(connection, route).await {
                Ok((consumer, consume_channel, publish_channel)) => {
                    channels.push(consume_channel.clone());
                    channels.push(publish_channel.clone());
                    let context = QueueContext {
                        route: route.clone(),
                        policy: self.config.retry,
                        confirm_timeout: self.config.confirm_timeout,
                        failure_pause: self.config.reconnect_min_backoff,
                        publish_channel,
                        publish_turn: Arc::new(tokio::sync::Mutex::new(())),
                    };
                    loops.push(consume_queue(
                        context,
                        consumer,
                        consume_channel,
                        self.config.concurrency,
                        session.clone(),
                        tracker.clone(),
                    ));
                }
                Err(error) => {
                    session.cancel();
                    return SessionEnd::Lost(error.to_string());
                }
            }
        }
        if self.routes.is_empty() {
            cancel.cancelled().await;
        }
        let mut lost = None;
        while let Some(outcome) = loops.next().await {
            if let Err(reason) = outcome {
                if lost.is_none() {
                    lost = Some(reason);
                    session.cancel();
                }
            }
        }
        match lost {
            Some(reason) => SessionEnd::Lost(reason),
            None => SessionEnd::Shutdown(channels),
        }
    }

    async fn start_consumer(
        &self,
        connection: &Connection,
        route: &Route,
    ) -> Result<(Consumer, Channel, Channel), RabbitError> {
        let consume_channel = connection
            .create_channel()
            .await
            .map_err(RabbitError::Channel)?;
        consume_channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await
            .map_err(RabbitError::Channel)?;
        let publish_channel = connection
            .create_channel()
            .await
            .map_err(RabbitError::Channel)?;
        publish_channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(RabbitError::Channel)?;
        let tag = format!("{}-{}", self.config.connection_name, uuid::Uuid::new_v4());
        let consumer = consume_channel
            .basic_consume(
                short(&route.queue)?,
                short(&tag)?,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| RabbitError::Consume {
                queue: route.queue.clone(),
                source,
            })?;
        tracing::info!(queue = %route.queue, prefetch = self.config.prefetch, concurrency = self.config.concurrency, "consuming");
        Ok((consumer, consume_channel, publish_channel))
    }
}

/// Pulls deliveries of one queue and hands each to a tracked task, at most
/// `concurrency` at once. Returns `Ok` once `cancel` fired (after cancelling
/// the consumer), `Err` if the consumer failed.
async fn consume_queue(
    context: QueueContext,
    mut consumer: Consumer,
    channel: Channel,
    concurrency: usize,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> Result<(), String> {
    let queue = context.route.queue.clone();
    let permits = Arc::new(Semaphore::new(concurrency));
    loop {
        let next = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            next = consumer.next() => next,
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => return Err(format!("consumer of {queue} failed: {error}")),
            None => return Err(format!("consumer of {queue} was cancelled by the broker")),
        };
        let permit = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else { break };
        let context = context.clone();
        tracker.spawn(async move {
            handle(&context, delivery).await;
            drop(permit);
        });
    }
    // Stop the broker delivering more; unstarted deliveries are requeued when
    // the channel closes.
    if let Err(error) = channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
    {
        tracing::debug!(%queue, %error, "cancelling the consumer failed");
    }
    Ok(())
}

/// Runs the handler on one delivery and settles it: ack, retry or dead letter.
async fn handle(context: &QueueContext, delivery: Delivery) {
    let attempt = wire::attempt(&delivery.properties);
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| "-".to_owned());
    let message_type = delivery
        .properties
        .kind()
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| "-".to_owned());
    let span = tracing::info_span!(
        "message",
        %message_id,
        %message_type,
        attempt,
        queue = %context.route.queue,
        subscriber = context.route.subscriber.as_deref().unwrap_or("-"),
    );
    settle(context, delivery, attempt).instrument(span).await;
}

async fn settle(context: &QueueContext, delivery: Delivery, attempt: u32) {
    let max_attempts = context.policy.max_attempts.max(1);
    let envelope = match wire::decode(&delivery.properties, &delivery.data) {
        Ok(envelope) => envelope,
        Err(error) => {
            dead_letter(
                context,
                &delivery,
                &format!("undecodable message: {error}"),
                attempt,
            )
            .await;
            return;
        }
    };
    let expected = context.route.handler.message_type();
    if envelope.message_type != expected {
        let error = HandlerError::UnknownType {
            message_type: envelope.message_type.clone(),
        };
        dead_letter(
            context,
            &delivery,
            &format!("{error} (queue {} takes {expected})", context.route.queue),
            attempt,
        )
        .await;
        return;
    }
    let outcome = AssertUnwindSafe(context.route.handler.invoke(
        Arc::new(envelope),
        attempt,
        max_attempts,
    ))
    .catch_unwind()
    .await;
    let error = match outcome {
        Ok(Ok(())) => {
            ack(&delivery, "handled").await;
            return;
        }
        Ok(Err(error)) => error,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            HandlerError::retryable(format!("handler panicked: {what}"))
        }
    };
    if error.is_retryable() {
        if let Some(delay) = context.policy.backoff_after(attempt) {
            retry(context, &delivery, &error.to_string(), attempt, delay).await;
            return;
        }
    }
    let reason = if error.is_retryable() {
        format!("{error} (after {attempt} of {max_attempts} attempts)")
    } else {
        error.to_string()
    };
    dead_letter(context, &delivery, &reason, attempt).await;
}

/// Sends a copy to the delay queue for `delay`, then acknowledges.
async fn retry(
    context: &QueueContext,
    delivery: &Delivery,
    error: &str,
    attempt: u32,
    delay: Duration,
) {
    let retry_queue = Naming::retry_queue(&context.route.queue, delay);
    let mut table = copied_headers(delivery);
    table.insert(headers::ATTEMPT.into(), AMQPValue::LongUInt(attempt + 1));
    table.insert(headers::LAST_ERROR.into(), long_string(error));
    let properties = delivery.properties.clone().with_headers(table);
    match publish_copy(context, &retry_queue, properties, &delivery.data).await {
        Ok(()) => {
            tracing::warn!(%error, retry_in = ?delay, %retry_queue, "handler failed, retry scheduled");
            ack(delivery, "retry scheduled").await;
        }
        Err(failure) => {
            tracing::error!(%error, %failure, "handler failed and the retry could not be scheduled; requeueing");
            requeue(context, delivery).await;
        }
    }
}

/// Parks a copy in the queue's dead-letter queue, then acknowledges.
async fn dead_letter(context: &QueueContext, delivery: &Delivery, error: &str, attempts: u32) {
    let dlq = Naming::dead_letter_queue(&context.route.queue);
    let mut table = copied_headers(delivery);
    table.insert(headers::ERROR.into(), long_string(error));
    table.insert(headers::ATTEMPTS.into(), AMQPValue::LongUInt(attempts));
    table.insert(
        headers::ORIGINAL_QUEUE.into(),
        long_string(&context.route.queue),
    );
    table.insert(
        headers::DEAD_LETTERED_AT.into(),
        long_string(&chrono::Utc::now().to_rfc3339()),
    );
    let properties = delivery.properties.clone().with_headers(table);
    match publish_copy(context, &dlq, properties, &delivery.data).await {
        Ok(()) => {
            let body = String::from_utf8_lossy(&delivery.data);
            tracing::error!(%error, attempts, %dlq, %body, "message dead-lettered");
            ack(delivery, "dead-lettered").await;
        }
        Err(failure) => {
            tracing::error!(%error, %failure, "message could not be dead-lettered; requeueing");
            requeue(context, delivery).await;
        }
    }
}

/// Publishes a copy to `queue` (default exchange) on the queue's confirm
/// channel and waits for its confirm, one copy at a time, within the
/// confirm timeout.
async fn publish_copy(
    context: &QueueContext,
    queue: &str,
    properties: lapin::BasicProperties,
    body: &[u8],
) -> Result<(), PublishFailure> {
    let deadline = Instant::now() + context.confirm_timeout;
    let Ok(_turn) = tokio::time::timeout_at(deadline, context.publish_turn.lock()).await else {
        return Err(PublishFailure::Unavailable {
            reason: "the publish channel stayed busy until the deadline".to_owned(),
            source: None,
        });
    };
    publish_confirmed(
        &context.publish_channel,
        "",
        queue,
        properties,
        body,
        deadline,
    )
    .await
}

/// The delivery's headers, less the broker's own dead-lettering history.
fn copied_headers(delivery: &Delivery) -> FieldTable {
    let mut table = FieldTable::default();
    if let Some(original) = delivery.properties.headers() {
        for (name, value) in original {
            let name_str = name.as_str();
            if name_str.starts_with("x-death")
                || name_str.starts_with("x-first-death")
                || name_str.starts_with("x-last-death")
            {
                continue;
            }
            table.insert(name.clone(), value.clone());
        }
    }
    table
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

async fn ack(delivery: &Delivery, what: &str) {
    match delivery.ack(BasicAckOptions::default()).await {
        Ok(true) => tracing::debug!(outcome = what, "acknowledged"),
        Ok(false) => {
            tracing::warn!(
                outcome = what,
                "channel gone before the ack; the broker will redeliver"
            )
        }
        Err(error) => {
            tracing::warn!(outcome = what, %error, "ack failed; the broker will redeliver")
        }
    }
}

/// Gives the delivery back to the broker, after a pause so that a broken
/// retry or dead-letter path does not spin.
async fn requeue(context: &QueueContext, delivery: &Delivery) {
    tokio::time::sleep(context.failure_pause).await;
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    if let Err(error) = delivery.nack(options).await {
        tracing::warn!(%error, "nack failed; the broker will redeliver");
    }
}
