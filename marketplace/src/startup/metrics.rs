//! The gauges sampled in the background: the outbox backlog and the
//! database pools, every [`SAMPLE_EVERY`]; and the recorder's upkeep.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{
    http::metrics::{self as names, handle},
    store::Database,
};

/// How often the gauges are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How long one sample of the outbox may take before it is skipped.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Samples `database`'s gauges until `stop` is cancelled.
pub fn spawn_sampler(database: Database, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SAMPLE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => sample(&database).await,
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
