//! [`RabbitWorker`]: the consuming side. Runs handlers, acknowledges,
//! retries, dead-letters, reconnects and shuts down gracefully.
//!
//! | file | concern |
//! |---|---|
//! | `session.rs` | connect, declare, consume every queue, reconnect with backoff |
//! | `consume.rs` | the consume loop of one queue, concurrency, the `delivery` span |
//! | `settle.rs` | the shared settlement applied to AMQP: ack, delay queue, dead-letter queue |
//! | `control.rs` | [`WorkerControl`]: pause and resume the consumer of one queue |

use std::{future::Future, sync::Arc, time::Duration};

use bus_core::{transport::RegisteredHandler, CircuitBreaker, Handlers, RetryPolicy};
use lapin::Channel;
use tokio_util::sync::CancellationToken;

use crate::{naming::short, BrokerAddresses, Naming, RabbitConfig, RabbitError, Topology};

pub use control::{QueueState, UnknownQueue, WorkerControl};

mod consume;
mod control;
mod session;
mod settle;

/// Consumes every command queue and subscriber queue of a [`Handlers`] set.
///
/// Per consumed queue: one consumer channel with `basic.qos(prefetch)` and
/// manual acknowledgements, at most `concurrency` handlers at once, and one
/// confirm-mode channel for retries and dead letters, carrying one
/// unconfirmed copy at a time (so that a copy the broker returns as
/// unroutable is never taken for another one's success). For each delivery:
///
/// 1. the [`bus_core::Envelope`] is rebuilt from the AMQP properties and body
///    ([`crate::wire::decode`]); a delivery that cannot be decoded, or whose type has
///    no handler on that queue, is dead-lettered at once;
/// 2. the handler runs through the shared invocation
///    ([`RegisteredHandler::invoke`]: span, panic catching, middleware,
///    upcasting) with the attempt number of the `x-attempt` header, and the
///    shared settlement ([`bus_core::transport::decide`]) decides the rest;
/// 3. ack: the delivery is acknowledged, strictly after the handler returned;
/// 4. retry (a retryable failure or a panic, with attempts left): a copy
///    (same message id, `x-attempt` + 1, `x-last-error`) is published to the
///    delay queue of that attempt's backoff and confirmed, then the delivery
///    is acknowledged;
/// 5. dead-letter (retries exhausted, permanent, decode, unknown type,
///    unsupported version): a copy with `x-error`, `x-attempts`,
///    `x-original-queue` and `x-dead-lettered-at` is published to the
///    queue's `.dlq` and confirmed, then the delivery is acknowledged.
///
/// An infrastructure failure ([`bus_core::FailureKind::Infrastructure`]:
/// the database unreachable) trips the worker's [`CircuitBreaker`]: every
/// consume loop stops taking deliveries, the failed delivery is held
/// unacknowledged with its attempt not counted, and once the breaker's probe
/// answers it runs again and consuming resumes. A shutdown meanwhile gives
/// it back to the broker as it came. Such a delivery is never dead-lettered.
///
/// A [`bus_core::BatchHandler`] is fed batches: the consume loop takes up
/// to [`BatchConfig::max_messages`](bus_core::BatchConfig) deliveries, or
/// as many as arrived within its `linger` of the first, whichever comes
/// first, and runs them in one call (one concurrency slot, a
/// `delivery_batch` span naming the message ids). The prefetch must be at
/// least the batch size ([`RabbitWorker::new`] refuses less), and with
/// `concurrency` batches running at once, `prefetch` of about
/// `concurrency × batch size` keeps every slot fed. Each delivery of the
/// batch is then settled by its own outcome exactly as above, and nothing
/// is acknowledged, retried or dead-lettered before the batch call
/// returned (its transaction committed). If the batch fails as a whole it
/// is run again message by message, so a poison message is dead-lettered
/// alone; an infrastructure failure holds the whole batch. Each delivery is
/// acknowledged on its own (no `multiple` ack: other batches of the same
/// channel may still be running). A shutdown or a pause while a batch is
/// being collected (or waits for a free slot) stops it before it started:
/// its deliveries are given back to the broker (`nack`, requeue), like
/// every prefetched delivery not yet started.
///
/// If a retry or dead-letter publish fails, the delivery is rejected with
/// `requeue`: it comes back, nothing is lost. A handler may therefore see a
/// message more than once (at-least-once): handlers must be idempotent.
///
/// When the connection drops, the worker logs it, waits (the exponential
/// backoff of [`RabbitConfig::reconnect_policy`]), reconnects,
/// re-declares the topology and consumes again, without a restart.
///
/// The consumer of each queue can be paused and resumed while the worker
/// runs, through its [`WorkerControl`] ([`RabbitWorker::control`]); a
/// paused queue stays paused across reconnections.
#[derive(Debug)]
pub struct RabbitWorker {
    config: RabbitConfig,
    addresses: BrokerAddresses,
    topology: Topology,
    routes: Vec<Route>,
    breaker: CircuitBreaker,
    control: WorkerControl,
}

/// One consumed queue and the handler of its messages.
#[derive(Debug, Clone)]
struct Route {
    queue: String,
    handler: RegisteredHandler,
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
    /// Paused behind while a dependency of the handlers is down.
    breaker: CircuitBreaker,
    /// Fires on shutdown or when the session ends: a held delivery is given
    /// back instead of waiting for the breaker.
    stop: CancellationToken,
}

impl RabbitWorker {
    /// A worker for every command and subscription of `handlers`, named and
    /// declared after `config` ([`RabbitConfig::topology`]). Does not connect
    /// yet: [`RabbitWorker::run`] does.
    pub fn new(handlers: &Handlers, config: RabbitConfig) -> Result<Self, RabbitError> {
        let addresses = config.addresses()?;
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
        });
        let subscribers = handlers
            .subscriptions()
            .into_iter()
            .map(|subscription| Route {
                queue: naming.subscriber_queue(subscription.event_type, &subscription.subscriber),
                handler: subscription.handler.clone(),
            });
        let routes: Vec<Route> = commands.chain(subscribers).collect();
        for route in &routes {
            if let Some(batch) = route.handler.batch_config() {
                if batch.max_messages > usize::from(config.prefetch) {
                    return Err(RabbitError::InvalidConfig(format!(
                        "the handler of {} takes batches of up to {} messages, more than the \
                         prefetch of {}: a batch can never fill; raise prefetch to at least \
                         the batch size",
                        route.queue, batch.max_messages, config.prefetch
                    )));
                }
            }
            short(&Naming::dead_letter_queue(&route.queue))?;
            for delay in topology.retry_delays() {
                short(&Naming::retry_queue(&route.queue, *delay))?;
            }
        }
        let control = WorkerControl::new(routes.iter().map(|route| route.queue.clone()));
        Ok(Self {
            config,
            addresses,
            topology,
            routes,
            breaker: CircuitBreaker::default(),
            control,
        })
    }

    /// Pauses behind `breaker` on infrastructure failures (default: a
    /// breaker without a probe, [`CircuitBreaker::default`]). Give it a probe
    /// of the database the handlers use, and share it with whatever reports
    /// readiness.
    pub fn with_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = breaker;
        self
    }

    /// The breaker this worker pauses behind.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Why consuming is paused (a dependency down), or `None`.
    pub fn paused(&self) -> Option<String> {
        self.breaker.paused()
    }

    /// Pauses and resumes the consumers of this worker's queues, before or
    /// while it runs.
    pub fn control(&self) -> &WorkerControl {
        &self.control
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
}
