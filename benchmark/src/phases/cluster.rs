//! The write path on a RabbitMQ cluster with quorum queues: the API and the
//! worker started as the other phases start them ([`System::start`]), with
//! every node's address in `--amqp-url` and `--queue-type quorum`;
//! accepted `POST /offer` beside raw confirmed publishes to a quorum queue
//! at a few concurrencies (the offers phase's [`Sides`]), then offers
//! applied end to end beside the raw two hops on quorum queues (the
//! end-to-end phase), all on the same cluster.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::load;
use crate::machine::Machine;
use crate::phases::end_to_end::{self, EndToEnd};
use crate::phases::offers::{Pair, Sides};
use crate::processes::{Services, System};
use crate::raw_two_hop::RawTwoHop;

/// Concurrency levels measured by default.
pub(crate) const LEVELS: [usize; 2] = [16, 64];

/// What the cluster phase measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClusterReport {
    pub(crate) machine: Machine,
    pub(crate) date: String,
    /// The nodes' AMQP addresses, `host:port`.
    pub(crate) nodes: Vec<String>,
    pub(crate) level_seconds: f64,
    /// Per concurrency: accepted `POST /offer` and raw confirmed publishes
    /// to a quorum queue.
    pub(crate) levels: Vec<Pair>,
    /// Offers applied end to end, with the raw two hops on quorum queues.
    pub(crate) end_to_end: Option<EndToEnd>,
}

/// The run's identifier on the cluster: its database is `bench_{id}`, its
/// namespace `bench-{id}` (see [`System::start`]).
pub(crate) fn run_id(id: &str) -> String {
    format!("{id}_cluster")
}

/// Starts the API and the worker on `cluster` (quorum queues), measures
/// `levels` for `duration` per side, then `offers` offers end to end over
/// `books` seeded books. The caller removes the database and queues
/// afterwards, even when this fails or is interrupted.
pub(crate) async fn run(
    cluster: &Services,
    id: &str,
    levels: &[usize],
    duration: Duration,
    offers: usize,
    books: i64,
) -> Result<ClusterReport> {
    let machine = Machine::detect();
    let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let nodes = cluster.broker_addresses();
    let client = load::http_client(8)?;
    let id = run_id(id);
    println!(
        "cluster: starting the API and the worker on {} (quorum queues; database bench_{id}, namespace bench-{id})",
        nodes.join(", ")
    );
    let mut system = System::start(&client, cluster, &id).await?;
    println!("logs in {}", system.log_dir.display());
    let pool = system.pool().await?;
    // The brokers' CPU is not counted: three nodes, none of them alone.
    let mut sides = Sides::start(&system, &pool).await?;
    let mut measured = Vec::with_capacity(levels.len());
    for &concurrency in levels {
        measured.push(
            sides
                .measure(&system, &pool, concurrency, duration, None)
                .await?,
        );
    }
    sides.delete().await?;
    let database = format!("{}_raw", system.database);
    let raw = RawTwoHop::start(cluster, &database, &system.namespace).await?;
    let end_to_end = end_to_end::run(&system, &pool, &raw, offers, books).await?;
    raw.delete().await?;
    pool.close().await;
    system.stop().await;
    Ok(ClusterReport {
        machine,
        date,
        nodes,
        level_seconds: duration.as_secs_f64(),
        levels: measured,
        end_to_end,
    })
}
