//! The gauges sampled in the background: the outbox backlog and the
//! database pools, every [`SAMPLE_EVERY`], with the recorder's upkeep; the
//! RabbitMQ queues' depths every [`QUEUES_EVERY`] (workers).

use std::time::Duration;

use bus_rabbitmq::{Naming, RabbitPublisher, Topology};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    http::metrics::{self as names, handle},
    store::Database,
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

/// Samples `database`'s gauges (and, for a worker, the depths of `queues`)
/// until `stop` is cancelled.
pub fn spawn_sampler(
    database: Database,
    queues: Option<Queues>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut queues_every = tokio::time::interval(QUEUES_EVERY);
        queues_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => sample(&database).await,
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
    for (pool, size, idle) in database.pools() {
        let idle = idle as f64;
        metrics::gauge!(names::POOL_SIZE,
            "db_client_connection_pool_name" => pool,
            "db_client_connection_state" => "idle")
        .set(idle);
        metrics::gauge!(names::POOL_SIZE,
            "db_client_connection_pool_name" => pool,
            "db_client_connection_state" => "used")
        .set((f64::from(size) - idle).max(0.0));
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
