use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore, TryAcquireError},
    time::Instant,
};
use tracing::Instrument;

use crate::{
    bus::BoxFuture,
    dead_letter::dead_letter,
    dead_letter_ops::Redelivery,
    settlement::Settlement,
    transport::{settle_span, RegisteredHandler},
    BatchConfig, CircuitBreaker, CommandBus, DeadLetterSink, DispatchError, Envelope, EventBus,
    Handlers, InMemoryDeadLetters, RetryPolicy,
};

/// Settings of an [`AsyncBus`].
#[derive(Debug, Clone)]
pub struct AsyncBusConfig {
    /// Messages accepted but not yet finished (queued, running or waiting
    /// for a retry), at most. Past it, `dispatch` fails fast with
    /// [`DispatchError::Saturated`]. An event with `n` subscribers takes `n`.
    pub capacity: usize,
    /// Handlers running at once.
    pub concurrency: usize,
    /// Retries of failing handlers.
    pub retry: RetryPolicy,
    /// How long [`AsyncBus::shutdown`] lets scheduled retries run before
    /// dead-lettering what is still waiting.
    pub drain_timeout: Duration,
}

impl Default for AsyncBusConfig {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            concurrency: 16,
            retry: RetryPolicy::default(),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// A bounded in-process queue served by tokio tasks.
///
/// `dispatch` and `publish` return as soon as the message is queued. Workers
/// run up to `concurrency` handlers at once; the shared settlement
/// decides each result: a handler that fails with a retryable error (or
/// panics) is retried after the [`RetryPolicy`]'s
/// backoff, and a message that exhausts it, fails permanently or cannot be
/// decoded goes to the [`DeadLetterSink`] (and the log).
///
/// A handler failing on infrastructure (the database down) trips the bus's
/// [`CircuitBreaker`]: workers stop starting messages, the failed message
/// waits, its attempt not counted, and everything resumes once the
/// breaker's probe answers. Such a message is never dead-lettered, except
/// by a shutdown whose drain timeout passes first.
///
/// A [`BatchHandler`](crate::BatchHandler)'s messages are collected per
/// handler into batches of up to [`BatchConfig::max_messages`], or what
/// arrived within its `linger` of the first; a batch takes one of the
/// `concurrency` slots and each of its messages is settled as above. A
/// retried message joins a later batch.
///
/// Memory is bounded by `capacity`: a full bus answers
/// [`DispatchError::Saturated`] at once instead of growing.
/// [`AsyncBus::shutdown`] stops accepting and waits for everything accepted.
///
/// Messages live in memory only: a crash loses what was queued. Use the
/// RabbitMQ transport where that matters.
#[derive(Clone)]
pub struct AsyncBus {
    inner: Arc<Inner>,
}

struct Inner {
    handlers: Handlers,
    dead_letters: Arc<dyn DeadLetterSink>,
    breaker: CircuitBreaker,
    config: AsyncBusConfig,
    permits: Arc<Semaphore>,
    jobs: mpsc::UnboundedSender<Job>,
    closing: AtomicBool,
    /// Flips to `true` when the drain deadline passes: waiting retries give up.
    abandon: watch::Sender<bool>,
}

struct Job {
    envelope: Arc<Envelope>,
    handler: RegisteredHandler,
    subscriber: Option<String>,
    attempt: u32,
    /// Held until the message is finished, so capacity counts retries too.
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for AsyncBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncBus")
            .field("config", &self.inner.config)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// Assembles an [`AsyncBus`]: its settings, where its dead letters go and
/// the circuit breaker its workers pause behind.
pub struct AsyncBusBuilder {
    handlers: Handlers,
    config: AsyncBusConfig,
    dead_letters: Option<Arc<dyn DeadLetterSink>>,
    breaker: CircuitBreaker,
}

impl AsyncBusBuilder {
    /// Capacity, concurrency, retries and drain timeout (default:
    /// [`AsyncBusConfig::default`]).
    pub fn config(mut self, config: AsyncBusConfig) -> Self {
        self.config = config;
        self
    }

    /// Where messages given up on go (default: [`InMemoryDeadLetters`]).
    pub fn dead_letters(mut self, sink: Arc<dyn DeadLetterSink>) -> Self {
        self.dead_letters = Some(sink);
        self
    }

    /// The breaker workers pause behind on infrastructure failures (default:
    /// one without a probe, [`CircuitBreaker::default`]). Give it a probe of
    /// the database the handlers use.
    pub fn breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = breaker;
        self
    }

    /// Starts the workers on the current tokio runtime.
    pub fn start(self) -> AsyncBus {
        let mut config = self.config;
        config.capacity = config
            .capacity
            .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        config.concurrency = config.concurrency.max(1);
        let (jobs, receiver) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            handlers: self.handlers,
            dead_letters: self
                .dead_letters
                .unwrap_or_else(|| Arc::new(InMemoryDeadLetters::default())),
            breaker: self.breaker,
            permits: Arc::new(Semaphore::new(config.capacity)),
            config,
            jobs,
            closing: AtomicBool::new(false),
            abandon: watch::channel(false).0,
        });
        tokio::spawn(run_workers(inner.clone(), receiver));
        AsyncBus { inner }
    }
}

impl std::fmt::Debug for AsyncBusBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncBusBuilder")
            .field("config", &self.config)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl AsyncBus {
    /// Starts assembling a bus for `handlers`.
    pub fn builder(handlers: Handlers) -> AsyncBusBuilder {
        AsyncBusBuilder {
            handlers,
            config: AsyncBusConfig::default(),
            dead_letters: None,
            breaker: CircuitBreaker::default(),
        }
    }

    /// Starts the workers on the current tokio runtime, keeping dead letters
    /// in memory.
    pub fn start(handlers: Handlers, config: AsyncBusConfig) -> Self {
        Self::builder(handlers).config(config).start()
    }

    /// Starts the workers on the current tokio runtime.
    pub fn start_with_dead_letters(
        handlers: Handlers,
        config: AsyncBusConfig,
        dead_letters: Arc<dyn DeadLetterSink>,
    ) -> Self {
        Self::builder(handlers)
            .config(config)
            .dead_letters(dead_letters)
            .start()
    }

    /// The breaker this bus's workers pause behind.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.inner.breaker
    }

    /// Why the workers are paused (a dependency down), or `None`.
    pub fn paused(&self) -> Option<String> {
        self.inner.breaker.paused()
    }

    /// Messages accepted and not finished yet.
    pub fn in_flight(&self) -> usize {
        self.inner.config.capacity - self.inner.permits.available_permits()
    }

    /// Stops accepting messages ([`DispatchError::ShuttingDown`]) and waits
    /// until every accepted message is handled or dead-lettered.
    ///
    /// Scheduled retries keep their backoff until the drain timeout; then
    /// the ones still waiting are dead-lettered (kept, not dropped) and the
    /// handlers still running are awaited.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.closing.store(true, Ordering::SeqCst);
        let all = inner.config.capacity as u32;
        let drained =
            tokio::time::timeout(inner.config.drain_timeout, inner.permits.acquire_many(all)).await;
        let _every_permit = match drained {
            Ok(every_permit) => every_permit,
            Err(_) => {
                tracing::warn!(
                    in_flight = self.in_flight(),
                    "drain timeout reached; dead-lettering messages still waiting for a retry"
                );
                inner.abandon.send_replace(true);
                // Running handlers finish on their own; nothing waits forever here
                // because abandoned retries release their permits at once.
                inner.permits.acquire_many(all).await
            }
        };
        // Close while holding every permit: a dispatch that read `closing`
        // just before it was set must not take a permit after the drain and
        // be accepted once the caller believes the bus is empty.
        inner.permits.close();
        tracing::info!("async bus drained");
    }

    fn enqueue(
        &self,
        envelope: Arc<Envelope>,
        targets: Vec<(RegisteredHandler, Option<String>)>,
    ) -> Result<(), DispatchError> {
        let inner = &self.inner;
        if inner.closing.load(Ordering::SeqCst) {
            return Err(DispatchError::ShuttingDown);
        }
        let mut permits = Vec::with_capacity(targets.len());
        for _ in &targets {
            match inner.permits.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(TryAcquireError::Closed) => return Err(DispatchError::ShuttingDown),
                Err(TryAcquireError::NoPermits) => {
                    return Err(DispatchError::Saturated {
                        capacity: inner.config.capacity,
                    })
                }
            }
        }
        for ((handler, subscriber), permit) in targets.into_iter().zip(permits) {
            let job = Job {
                envelope: envelope.clone(),
                handler,
                subscriber,
                attempt: 1,
                _permit: permit,
            };
            // The receiver lives as long as `inner`, which we hold.
            if inner.jobs.send(job).is_err() {
                return Err(DispatchError::ShuttingDown);
            }
        }
        Ok(())
    }
}

impl CommandBus for AsyncBus {
    fn send_envelope(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
        let result = match self.inner.handlers.command(&envelope.message_type) {
            Some(handler) => {
                let message_type = handler.message_type();
                let queued = self.enqueue(Arc::new(envelope), vec![(handler.clone(), None)]);
                let outcome = if queued.is_ok() {
                    "sent"
                } else {
                    "unavailable"
                };
                crate::metrics::record_sent(message_type, outcome, None);
                queued
            }
            None => Err(DispatchError::NoHandler {
                message_type: envelope.message_type,
            }),
        };
        Box::pin(std::future::ready(result))
    }
}

impl EventBus for AsyncBus {
    /// Queues the event for each of its subscribers; a replayed dead letter
    /// (header [`REDELIVER_TO`](crate::dead_letter_ops::REDELIVER_TO), set
    /// by a replay through the outbox) goes back to the one command handler
    /// or subscriber it names instead, as a first attempt.
    fn publish_envelope(&self, mut envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
        if let Some(target) = Redelivery::take(&mut envelope) {
            let result = self.redeliver(envelope, target);
            return Box::pin(std::future::ready(result));
        }
        let targets: Vec<_> = self
            .inner
            .handlers
            .subscribers(&envelope.message_type)
            .iter()
            .map(|s| (s.handler.clone(), Some(s.subscriber.clone())))
            .collect();
        let result = if self.inner.closing.load(Ordering::SeqCst) {
            Err(DispatchError::ShuttingDown)
        } else if targets.is_empty() {
            Ok(())
        } else {
            self.enqueue(Arc::new(envelope), targets)
        };
        Box::pin(std::future::ready(result))
    }
}

impl AsyncBus {
    /// Queues a replayed dead letter for the one handler it names. A target
    /// this bus does not have (a subscriber renamed since) is dead-lettered
    /// again with why, rather than dropped or retried forever.
    fn redeliver(
        &self,
        envelope: Envelope,
        target: Result<Redelivery, String>,
    ) -> Result<(), DispatchError> {
        let handlers = &self.inner.handlers;
        let found = match &target {
            Ok(Redelivery::Command) => handlers
                .command(&envelope.message_type)
                .map(|handler| (handler.clone(), None)),
            Ok(Redelivery::Subscriber(name)) => handlers
                .subscribers(&envelope.message_type)
                .iter()
                .find(|subscription| &subscription.subscriber == name)
                .map(|subscription| (subscription.handler.clone(), Some(name.clone()))),
            Err(_) => None,
        };
        match found {
            Some(target) => {
                tracing::info!(
                    message_id = %envelope.id,
                    message_type = %envelope.message_type,
                    subscriber = target.1.as_deref().unwrap_or("-"),
                    "replayed dead letter queued"
                );
                self.enqueue(Arc::new(envelope), vec![target])
            }
            None => {
                let (subscriber, reason) = match target {
                    Ok(Redelivery::Subscriber(name)) => (
                        Some(name),
                        "replayed to a subscriber this bus does not have",
                    ),
                    Ok(Redelivery::Command) => {
                        (None, "replayed to a command handler this bus does not have")
                    }
                    Err(_) => (None, "replayed with an unreadable redelivery target"),
                };
                dead_letter(
                    self.inner.dead_letters.as_ref(),
                    &envelope,
                    subscriber.as_deref(),
                    reason,
                    0,
                );
                Ok(())
            }
        }
    }
}

async fn run_workers(inner: Arc<Inner>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let slots = Arc::new(Semaphore::new(inner.config.concurrency));
    let mut abandon = inner.abandon.subscribe();
    let mut batches = Collecting::default();
    loop {
        let job = tokio::select! {
            job = jobs.recv() => job,
            () = batches.next_deadline() => {
                for ready in batches.take_expired() {
                    dispatch(&inner, &slots, &mut abandon, ready).await;
                }
                continue;
            }
        };
        let Some(job) = job else { break };
        match job.handler.batch_config() {
            Some(config) => {
                if let Some(full) = batches.push(job, config) {
                    dispatch(&inner, &slots, &mut abandon, full).await;
                }
            }
            None => dispatch(&inner, &slots, &mut abandon, vec![job]).await,
        }
    }
    for ready in batches.take_all() {
        dispatch(&inner, &slots, &mut abandon, ready).await;
    }
}

/// Runs `jobs` (one message, or a batch of one handler's messages) in a
/// task of its own once a concurrency slot is free and the breaker closed.
async fn dispatch(
    inner: &Arc<Inner>,
    slots: &Arc<Semaphore>,
    abandon: &mut watch::Receiver<bool>,
    jobs: Vec<Job>,
) {
    let Ok(slot) = slots.clone().acquire_owned().await else {
        return;
    };
    // While the dependency is down, start nothing new: the jobs wait
    // here, their permits held, until the breaker closes.
    let abandoned = tokio::select! {
        () = inner.breaker.closed() => false,
        _ = abandon.wait_for(|abandon| *abandon) => true,
    };
    if abandoned && inner.breaker.paused().is_some() {
        let reason = inner.breaker.paused().unwrap_or_default();
        for job in jobs {
            dead_letter(
                inner.dead_letters.as_ref(),
                &job.envelope,
                job.subscriber.as_deref(),
                &format!("bus shut down while its consumers were {reason}"),
                job.attempt,
            );
        }
        return;
    }
    let inner = inner.clone();
    tokio::spawn(async move {
        if jobs.len() == 1 {
            for job in jobs {
                run_job(&inner, job).await;
            }
        } else {
            run_batch(&inner, jobs).await;
        }
        drop(slot);
    });
}

/// The batches being collected, one per batch handler (message type and
/// subscriber), each with the time it must run by.
#[derive(Default)]
struct Collecting {
    pending: HashMap<HandlerKey, (Vec<Job>, Instant)>,
}

/// A batch handler: its message type and, for a subscriber, its name.
type HandlerKey = (&'static str, Option<String>);

impl Collecting {
    /// Adds `job` to its handler's batch; returns the batch if now full.
    fn push(&mut self, job: Job, config: BatchConfig) -> Option<Vec<Job>> {
        let key = (job.handler.message_type(), job.subscriber.clone());
        let (batch, _) = self
            .pending
            .entry(key.clone())
            .or_insert_with(|| (Vec::new(), Instant::now() + config.linger));
        batch.push(job);
        if batch.len() >= config.max_messages {
            return self.pending.remove(&key).map(|(batch, _)| batch);
        }
        None
    }

    /// Completes when the oldest batch's linger has passed (never if none).
    async fn next_deadline(&self) {
        match self.pending.values().map(|(_, deadline)| *deadline).min() {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }

    /// The batches whose linger has passed.
    fn take_expired(&mut self) -> Vec<Vec<Job>> {
        let now = Instant::now();
        let expired: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(key, _)| key.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|key| self.pending.remove(&key).map(|(batch, _)| batch))
            .collect()
    }

    /// Every batch, whatever its linger.
    fn take_all(&mut self) -> Vec<Vec<Job>> {
        self.pending.drain().map(|(_, (batch, _))| batch).collect()
    }
}

async fn run_job(inner: &Arc<Inner>, job: Job) {
    let (result, settlement) = job
        .handler
        .invoke_and_decide(job.envelope.clone(), job.attempt, &inner.config.retry)
        .await;
    settle(inner, job, result, settlement);
}

/// Runs a batch of one handler's jobs in one call and settles each job by
/// its own outcome.
async fn run_batch(inner: &Arc<Inner>, jobs: Vec<Job>) {
    let Some(handler) = jobs.first().map(|job| job.handler.clone()) else {
        return;
    };
    let deliveries: Vec<_> = jobs
        .iter()
        .map(|job| (job.envelope.clone(), job.attempt))
        .collect();
    let outcomes = handler
        .invoke_batch_and_decide(&deliveries, &inner.config.retry)
        .await;
    for (job, (result, settlement)) in jobs.into_iter().zip(outcomes) {
        settle(inner, job, result, settlement);
    }
}

/// Applies the settlement of one job: done, retried later, kept behind the
/// breaker or dead-lettered.
fn settle(
    inner: &Arc<Inner>,
    job: Job,
    result: Result<(), crate::HandlerError>,
    settlement: Settlement,
) {
    let span = settle_span(&job.envelope);
    let _entered = span.enter();
    let delay = match settlement {
        Settlement::Retry { after } => after,
        Settlement::Suspend { reason } => {
            suspend(inner, job, &reason);
            return;
        }
        Settlement::DeadLetter { reason } => {
            dead_letter(
                inner.dead_letters.as_ref(),
                &job.envelope,
                job.subscriber.as_deref(),
                &reason,
                job.attempt,
            );
            return;
        }
        _ => return,
    };
    let error = result
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    tracing::warn!(
        message_id = %job.envelope.id,
        message_type = %job.envelope.message_type,
        subscriber = job.subscriber.as_deref().unwrap_or("-"),
        attempt = job.attempt,
        retry_in_ms = delay.as_millis() as u64,
        %error,
        "handler failed, retrying"
    );
    requeue(inner, job, Until::Elapsed(delay), error);
}

/// Keeps `job` (same attempt) until the breaker closes, then queues it again.
fn suspend(inner: &Arc<Inner>, job: Job, reason: &str) {
    tracing::warn!(
        message_id = %job.envelope.id,
        message_type = %job.envelope.message_type,
        subscriber = job.subscriber.as_deref().unwrap_or("-"),
        attempt = job.attempt,
        error = reason,
        "dependency unavailable: message kept, attempt not counted"
    );
    inner.breaker.trip(reason);
    requeue(inner, job, Until::BreakerClosed, reason.to_owned());
}

/// What a job set aside waits for before it is queued again.
enum Until {
    /// Its retry delay: it comes back as its next attempt.
    Elapsed(Duration),
    /// The circuit breaker closing: it comes back as the same attempt.
    BreakerClosed,
}

/// Queues `job` again once `until` is met; if the bus shuts down (or has
/// stopped) first, dead-letters it with `last_error`, so nothing accepted is
/// dropped silently.
fn requeue(inner: &Arc<Inner>, job: Job, until: Until, last_error: String) {
    let inner = inner.clone();
    // Called in the job's `settle` span: a dead letter on shutdown is
    // logged in it too.
    let span = tracing::Span::current();
    let wait = async move {
        let (waiting_for, next_attempt) = match until {
            Until::Elapsed(_) => ("before retry", job.attempt + 1),
            Until::BreakerClosed => ("while a dependency was unavailable", job.attempt),
        };
        let mut abandon = inner.abandon.subscribe();
        let met = async {
            match until {
                Until::Elapsed(delay) => tokio::time::sleep(delay).await,
                Until::BreakerClosed => inner.breaker.closed().await,
            }
        };
        let abandoned = tokio::select! {
            () = met => false,
            _ = abandon.wait_for(|abandon| *abandon) => true,
        };
        let stopped = if abandoned {
            Some((job, "shut down"))
        } else {
            let again = Job {
                attempt: next_attempt,
                ..job
            };
            match inner.jobs.send(again) {
                Ok(()) => None,
                Err(mpsc::error::SendError(job)) => Some((job, "stopped")),
            }
        };
        if let Some((job, how)) = stopped {
            dead_letter(
                inner.dead_letters.as_ref(),
                &job.envelope,
                job.subscriber.as_deref(),
                &format!("bus {how} {waiting_for}; last error: {last_error}"),
                job.attempt,
            );
        }
    };
    tokio::spawn(wait.instrument(span));
}
