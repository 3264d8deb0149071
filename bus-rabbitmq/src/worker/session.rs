//! A worker's life with the broker: connect, declare the topology, consume
//! every queue, and reconnect with backoff when the connection is lost.

use std::{sync::Arc, time::Duration};

use futures::{stream::FuturesUnordered, StreamExt};
use lapin::{
    options::{BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions},
    types::FieldTable,
    Channel, Connection, ConnectionProperties, Consumer, Event,
};
use tokio::time::Instant;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    consume::{consume_queue, Stopped},
    QueueContext, RabbitWorker, Route,
};
use crate::{naming::short, RabbitError};

/// How often the session checks its connection besides listening to its
/// error events (a connection closed by the broker raises none).
const CONNECTION_CHECK: Duration = Duration::from_secs(1);

/// How a consuming session ended.
enum SessionEnd {
    /// Shutdown was requested; consumers are cancelled.
    Shutdown(Vec<Channel>),
    /// The connection or a channel failed.
    Lost(String),
}

impl RabbitWorker {
    pub(super) async fn run_until_cancelled(
        &self,
        cancel: CancellationToken,
    ) -> Result<(), RabbitError> {
        let tracker = TaskTracker::new();
        let policy = self.config.reconnect_policy();
        // Consecutive failed sessions: the exponent of the reconnect delay.
        let mut failures: u32 = 1;
        loop {
            let connected = tokio::select! {
                () = cancel.cancelled() => break,
                connected = self.connect() => connected,
            };
            let session_started = Instant::now();
            match connected {
                Err(error) => {
                    let retry_in = policy.delay_after(failures);
                    tracing::warn!(%error, ?retry_in, "worker cannot reach the broker");
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
                        // A session that lasted resets the backoff; one that
                        // failed at once (e.g. consume refused) keeps doubling it.
                        if session_started.elapsed() >= self.config.reconnect_max_backoff {
                            failures = 1;
                        }
                        let retry_in = policy.delay_after(failures);
                        tracing::warn!(%reason, ?retry_in, "worker lost the broker, reconnecting");
                        if connection.status().connected() {
                            let _ = connection.close(200, "reconnecting".into()).await;
                        }
                    }
                },
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(policy.delay_after(failures)) => {}
            }
            failures = failures.saturating_add(1);
        }
        // Shutdown while disconnected: wait for handlers of earlier sessions
        // (their acks fail; the broker redelivers those messages).
        tracker.close();
        tracker.wait().await;
        tracing::info!("worker stopped");
        Ok(())
    }

    /// Opens a connection to the first broker address that answers (the
    /// next one after a lost connection) and declares the topology on it.
    async fn connect(&self) -> Result<Connection, RabbitError> {
        let properties = ConnectionProperties::default().with_connection_name(
            format!("{} (worker)", self.config.connection_name)
                .as_str()
                .into(),
        );
        let (connection, address) = self
            .addresses
            .connect(&properties, self.config.connect_timeout)
            .await?;
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
            %address,
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
        let mut loops = FuturesUnordered::new();
        for route in &self.routes {
            let publish_channel = match self.open_publish_channel(connection).await {
                Ok(channel) => channel,
                Err(error) => {
                    session.cancel();
                    return SessionEnd::Lost(error.to_string());
                }
            };
            let context = QueueContext {
                route: route.clone(),
                policy: self.config.retry,
                confirm_timeout: self.config.confirm_timeout,
                failure_pause: self.config.reconnect_min_backoff,
                publish_channel,
                publish_turn: Arc::new(tokio::sync::Mutex::new(())),
                breaker: self.breaker.clone(),
                stop: session.clone(),
            };
            loops.push(self.run_queue(connection, context, session.clone(), tracker.clone()));
        }
        if self.routes.is_empty() {
            tokio::select! {
                () = cancel.cancelled() => {}
                reason = connection_lost(connection) => return SessionEnd::Lost(reason),
            }
        }
        // The session ends on the first failure, whichever notices it: a
        // queue loop, or the watchdog on the connection itself (a consumer
        // whose stream never ends must not keep the worker on a dead
        // connection). The other loops are dropped, not awaited: their
        // channels died with the connection, and the deliveries they held
        // go back to the queue with it; handlers already running finish in
        // the tracker, and their acks fail.
        let watchdog = connection_lost(connection);
        tokio::pin!(watchdog);
        let mut channels = Vec::new();
        loop {
            let outcome = tokio::select! {
                reason = &mut watchdog => {
                    session.cancel();
                    return SessionEnd::Lost(reason);
                }
                outcome = loops.next() => outcome,
            };
            match outcome {
                None => return SessionEnd::Shutdown(channels),
                Some(Ok(open)) => channels.extend(open),
                Some(Err(reason)) => {
                    session.cancel();
                    return SessionEnd::Lost(reason);
                }
            }
        }
    }

    /// Consumes one queue for the session: not while it is paused, again
    /// on a new channel each time it is resumed. Returns the channels left
    /// open at shutdown (closed once the handlers have settled).
    async fn run_queue(
        &self,
        connection: &Connection,
        context: QueueContext,
        session: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<Vec<Channel>, String> {
        let queue = context.route.queue.clone();
        loop {
            if self.control.is_paused(&queue) {
                tracing::info!(%queue, "consumer paused: messages wait in the queue");
                tokio::select! {
                    biased;
                    () = session.cancelled() => return Ok(vec![context.publish_channel.clone()]),
                    () = self.control.until_resumed(&queue) => {}
                }
                tracing::info!(%queue, "consumer resumed");
            }
            let (consumer, consume_channel) = self
                .open_consumer(connection, &context.route)
                .await
                .map_err(|error| error.to_string())?;
            let stopped = consume_queue(
                context.clone(),
                consumer,
                consume_channel.clone(),
                self.config.concurrency,
                session.clone(),
                tracker.clone(),
                self.control.clone(),
            )
            .await?;
            match stopped {
                Stopped::Cancelled => {
                    return Ok(vec![consume_channel, context.publish_channel.clone()]);
                }
                // In-flight handlers have settled: closing the channel gives
                // the prefetched, unstarted deliveries back to the queue.
                Stopped::Paused => {
                    let _ = consume_channel.close(200, "consumer paused".into()).await;
                }
            }
        }
    }

    /// A confirm-mode channel for the retry and dead-letter copies of one
    /// queue.
    async fn open_publish_channel(&self, connection: &Connection) -> Result<Channel, RabbitError> {
        let publish_channel = connection
            .create_channel()
            .await
            .map_err(RabbitError::Channel)?;
        publish_channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(RabbitError::Channel)?;
        Ok(publish_channel)
    }

    /// A consumer of `route`'s queue on a channel of its own.
    async fn open_consumer(
        &self,
        connection: &Connection,
        route: &Route,
    ) -> Result<(Consumer, Channel), RabbitError> {
        let consume_channel = connection
            .create_channel()
            .await
            .map_err(RabbitError::Channel)?;
        consume_channel
            .basic_qos(self.config.prefetch, BasicQosOptions::default())
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
        Ok((consumer, consume_channel))
    }
}

/// Resolves once `connection` is no longer usable, with why: on its error
/// event, or when a periodic check finds it closed or failed.
async fn connection_lost(connection: &Connection) -> String {
    let mut events = connection.events_listener();
    let mut check = tokio::time::interval(CONNECTION_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Event::Error(error)) => return format!("connection failed: {error}"),
                Some(_) => {}
                // The connection's event stream ended with it.
                None => return "connection closed".to_owned(),
            },
            _ = check.tick() => {
                let status = connection.status();
                if !status.connected() {
                    let state = if status.errored() {
                        "failed"
                    } else if status.closing() {
                        "closing"
                    } else {
                        "closed"
                    };
                    return format!("connection {state}");
                }
            }
        }
    }
}
