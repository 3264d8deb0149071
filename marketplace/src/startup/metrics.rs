//! The gauges sampled in the background: the outbox backlog, the database
//! pools (and a probe of their wait, [`NamedPool::connection_wait`]) and a
//! worker's paused consumers, every [`SAMPLE_EVERY`], with the recorder's
//! upkeep; the RabbitMQ queues' depths every [`QUEUES_EVERY`] (workers).

use std::time::Duration;

use bus_core::CircuitBreaker;
use bus_rabbitmq::{Naming, RabbitPublisher, Topology, WorkerControl};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    http::metrics::{self as names, handle},
    store::{Database, NamedPool},
};

/// How often the gauges are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How often the RabbitMQ queues' depths are read.
pub const QUEUES_EVERY: Duration = Duration::from_secs(15);
/// How long one sample of the outbox may take before it is skipped.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// The RabbitMQ queues whose depth a worker reports: its command and
/// subscriber queues and their dead-letter queues.
pub struct Queues {
    publisher: RabbitPublisher,
    names: Vec<String>,
    kinds: Vec<&'static str>,
}

impl Queues {
    /// The work queues of `topology` and their dead-letter queues, read
    /// through `publisher`'s connection.
    pub fn new(publisher: RabbitPublisher, topology: &Topology) -> Self {
        let commands = topology.naming().commands_exchange();
        let (mut names, mut kinds) = (Vec::new(), Vec::new());
        for work in topology.work_queues() {
            let kind = if work.exchange == commands {
                "command"
            } else {
                "event"
            };
            names.push(Naming::dead_letter_queue(&work.queue));
            kinds.push("dead_letter");
            names.push(work.queue);
            kinds.push(kind);
        }
        Self {
            publisher,
            names,
            kinds,
        }
    }

    async fn sample(&self) {
        match self.publisher.queue_depths(&self.names).await {
            Ok(depths) => {
                for ((queue, depth), kind) in depths.into_iter().zip(&self.kinds) {
                    metrics::gauge!(names::QUEUE_DEPTH,
                        "messaging_destination_name" => queue,
                        "queue_kind" => *kind)
                    .set(f64::from(depth));
                }
            }
            Err(error) => tracing::debug!(%error, "metrics: queue depths not sampled"),
        }
    }
}

/// A worker's consumers: which queues an operator paused, and whether the
/// breaker paused them all.
pub struct Consumers {
    /// The per-queue pauses.
    pub control: WorkerControl,
    /// The breaker every consumer waits behind while the database is away.
    pub breaker: CircuitBreaker,
}

impl Consumers {
    fn sample(&self) {
        let broken = if self.breaker.paused().is_some() {
            1.0
        } else {
            0.0
        };
        for state in self.control.queues() {
            let paused = if state.paused { 1.0 } else { 0.0 };
            metrics::gauge!(names::CONSUMER_PAUSED,
                "messaging_destination_name" => state.queue.clone(),
                "reason" => "operator")
            .set(paused);
            metrics::gauge!(names::CONSUMER_PAUSED,
                "messaging_destination_name" => state.queue,
                "reason" => "breaker")
            .set(broken);
        }
    }
}

/// The worker's parts the sampler reads besides the database.
pub struct WorkerParts {
    /// The queues whose depths it reports.
    pub queues: Queues,
    /// The consumers whose pauses it reports.
    pub consumers: Consumers,
}

/// Samples `database`'s gauges (and, for a worker, the depths of its
/// queues and its paused consumers) until `stop` is cancelled.
pub fn spawn_sampler(
    database: Database,
    worker: Option<WorkerParts>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut queues_every = tokio::time::interval(QUEUES_EVERY);
        queues_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (queues, consumers) = match worker {
            Some(parts) => (Some(parts.queues), Some(parts.consumers)),
            None => (None, None),
        };
        loop {
            tokio::select! {
                _ = every.tick() => {
                    if let Some(consumers) = &consumers {
                        consumers.sample();
                    }
                    sample(&database).await;
                }
                _ = queues_every.tick(), if queues.is_some() => {
                    if let Some(queues) = &queues {
                        queues.sample().await;
                    }
                }
                () = stop.cancelled() => return,
            }
        }
    })
}

/// One sample of every gauge; the histograms' samples are folded in.
async fn sample(database: &Database) {
    for pool in database.pools() {
        sample_pool(&pool).await;
    }
    match tokio::time::timeout(SAMPLE_TIMEOUT, database.outbox_backlog()).await {
        Ok(Ok(backlog)) => {
            metrics::gauge!(names::OUTBOX_BACKLOG).set(backlog.rows as f64);
            metrics::gauge!(names::OUTBOX_OLDEST_AGE).set(backlog.oldest_age_seconds);
        }
        Ok(Err(error)) => tracing::debug!(%error, "metrics: outbox backlog not sampled"),
        Err(_elapsed) => tracing::debug!("metrics: outbox backlog sample timed out"),
    }
    handle().run_upkeep();
}

/// A pool's connections by state, its maximum, and a probe of the wait for
/// a connection.
async fn sample_pool(pool: &NamedPool) {
    let name = pool.name();
    let (size, idle) = pool.connections();
    let idle = idle as f64;
    metrics::gauge!(names::POOL_CONNECTIONS,
        "db_client_connection_pool_name" => name,
        "db_client_connection_state" => "idle")
    .set(idle);
    metrics::gauge!(names::POOL_CONNECTIONS,
        "db_client_connection_pool_name" => name,
        "db_client_connection_state" => "used")
    .set((f64::from(size) - idle).max(0.0));
    metrics::gauge!(names::POOL_MAX, "db_client_connection_pool_name" => name)
        .set(f64::from(pool.max_connections()));
    if let Some(waited) = pool.connection_wait(SAMPLE_TIMEOUT).await {
        metrics::histogram!(names::POOL_WAIT, "db_client_connection_pool_name" => name)
            .record(waited.as_secs_f64());
    }
}
