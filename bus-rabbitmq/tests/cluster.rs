//! On a RabbitMQ cluster (opt-in): quorum queues keep every confirmed
//! message while a node goes away, and the publisher moves on to another
//! node.
//!
//! Needs a three-node cluster and its addresses in `BUS_CLUSTER_URLS`, e.g.
//! the local one of `deploy/local-rabbitmq-cluster.sh`:
//!
//! ```text
//! sudo bash deploy/local-rabbitmq-cluster.sh start
//! BUS_CLUSTER_URLS=amqp://guest:guest@127.0.0.1:5681/%2f,amqp://guest:guest@127.0.0.1:5682/%2f,amqp://guest:guest@127.0.0.1:5683/%2f \
//!   cargo test -p bus-rabbitmq --test cluster -- --ignored
//! sudo bash deploy/local-rabbitmq-cluster.sh stop
//! ```
//!
//! The node stopped and started again is `BUS_CLUSTER_NODE`
//! (default `marketplace-2@localhost`, the second address), with
//! `rabbitmqctl -n NODE stop_app` / `start_app`.

mod common;

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use bus_core::CommandBusExt;
use bus_rabbitmq::{
    lapin::{
        options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions},
        Connection, ConnectionProperties,
    },
    QueueType, RabbitConfig, RabbitPublisher, Topology,
};
use common::*;

fn rabbitmqctl(node: &str, command: &str) {
    let output = std::process::Command::new("rabbitmqctl")
        .args(["-n", node, command])
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        output.status.success(),
        "rabbitmqctl -n {node} {command}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Deletes the test's queues and exchanges on the cluster.
async fn cleanup_on(url: &str, topology: &Topology) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    for queue in topology.queues() {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for exchange in topology.exchanges() {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "OK".into()).await;
}

#[tokio::test]
#[ignore = "needs a RabbitMQ cluster: BUS_CLUSTER_URLS (deploy/local-rabbitmq-cluster.sh)"]
async fn nothing_confirmed_is_lost_while_a_node_of_the_cluster_is_stopped() {
    let urls: Vec<String> = std::env::var("BUS_CLUSTER_URLS")
        .expect("BUS_CLUSTER_URLS: the comma-separated AMQP URLs of the cluster's nodes")
        .split(',')
        .map(str::to_owned)
        .collect();
    assert!(urls.len() >= 3, "three nodes expected: {urls:?}");
    let stopped_node =
        std::env::var("BUS_CLUSTER_NODE").unwrap_or_else(|_| "marketplace-2@localhost".into());
    // The publisher starts on the node that is going to stop.
    let ordered = [urls[1].clone(), urls[0].clone(), urls[2].clone()].join(",");
    let config = RabbitConfig {
        amqp_url: ordered,
        shuffle_addresses: false,
        queue_type: QueueType::Quorum,
        ..config()
    };
    let record = Record::default();
    let topology = config.topology(&recording_handlers(&record));
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();

    // Publish without pause until told to stop; remember what was confirmed.
    let confirmed = Record::<u32>::default();
    let refused = Record::<u32>::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sending = tokio::spawn({
        let (publisher, confirmed, refused, stop) = (
            publisher.clone(),
            confirmed.clone(),
            refused.clone(),
            stop.clone(),
        );
        async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                match publisher.send(&DoThing { n }).await {
                    Ok(()) => confirmed.push(n),
                    Err(_) => refused.push(n),
                }
            }
        }
    });

    let enough = |count: usize| {
        let confirmed = confirmed.clone();
        async move {
            eventually(Duration::from_secs(60), || async {
                (confirmed.len() >= count).then_some(())
            })
            .await
        }
    };
    assert!(enough(200).await.is_some(), "publishes are confirmed");
    let node = stopped_node.clone();
    tokio::task::spawn_blocking(move || rabbitmqctl(&node, "stop_app"))
        .await
        .unwrap();
    let before_restart = confirmed.len();
    let moved_on = enough(before_restart + 200).await;
    stop.store(true, Ordering::SeqCst);
    sending.await.unwrap();
    let node = stopped_node.clone();
    tokio::task::spawn_blocking(move || rabbitmqctl(&node, "start_app"))
        .await
        .unwrap();
    assert!(
        moved_on.is_some(),
        "publishes are confirmed again once {stopped_node} is stopped ({} confirmed, {} unavailable)",
        confirmed.len(),
        refused.len()
    );

    // Every confirmed command is in its queue.
    let queue = format!("{}.command.test.DoThing", config.namespace);
    let connection = Connection::connect(&urls[0], ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut stored = BTreeSet::new();
    while let Some(message) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
    {
        let command: DoThing = serde_json::from_slice(&message.delivery.data).unwrap();
        stored.insert(command.n);
    }
    let lost: Vec<u32> = confirmed
        .list()
        .into_iter()
        .filter(|n| !stored.contains(n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} confirmed commands lost: {lost:?}",
        lost.len()
    );
    eprintln!(
        "{} confirmed, {} unavailable while {stopped_node} went away, {} stored",
        confirmed.len(),
        refused.len(),
        stored.len()
    );

    let _ = connection.close(200, "OK".into()).await;
    publisher.close();
    cleanup_on(&urls[0], &topology).await;
}
