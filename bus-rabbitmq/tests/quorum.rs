//! Quorum queues on the real broker (a single-node quorum queue works on
//! RabbitMQ 3.10): the declared arguments as the broker reports them, and
//! the delivery limit ending a crash loop in `.dlq`.

mod common;

use std::{collections::BTreeMap, time::Duration};

use bus_core::CommandBusExt;
use bus_rabbitmq::{
    lapin::{
        options::{BasicConsumeOptions, BasicNackOptions},
        types::FieldTable,
    },
    QueueType, RabbitConfig, RabbitPublisher,
};
use common::*;
use futures::StreamExt;
use serde_json::Value;

fn quorum_config() -> RabbitConfig {
    RabbitConfig {
        queue_type: QueueType::Quorum,
        ..config()
    }
}

/// Every queue of `namespace` with its type and arguments, as the broker
/// reports them (`rabbitmqctl list_queues`).
fn broker_queues(namespace: &str) -> BTreeMap<String, (String, BTreeMap<String, Value>)> {
    let output = std::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--formatter",
            "json",
            "name",
            "type",
            "arguments",
        ])
        .output()
        .expect("rabbitmqctl runs (the broker's CLI, on the test machine)");
    assert!(
        output.status.success(),
        "rabbitmqctl list_queues: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let queues: Vec<Value> = serde_json::from_slice(&output.stdout).expect("a JSON list");
    let prefix = format!("{namespace}.");
    queues
        .into_iter()
        .filter_map(|queue| {
            let name = queue["name"].as_str()?.to_owned();
            if !name.starts_with(&prefix) {
                return None;
            }
            let kind = queue["type"].as_str()?.to_owned();
            // Each argument is [name, type, value].
            let arguments = queue["arguments"]
                .as_array()?
                .iter()
                .filter_map(|argument| {
                    Some((argument[0].as_str()?.to_owned(), argument[2].clone()))
                })
                .collect();
            Some((name, (kind, arguments)))
        })
        .collect()
}

#[tokio::test]
async fn the_quorum_topology_is_declared_with_its_delivery_limit_and_at_least_once_dead_lettering()
{
    let config = quorum_config();
    let record = Record::default();
    let topology = config.topology(&recording_handlers(&record));
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();

    let queues = broker_queues(&config.namespace);
    let mut names: Vec<&String> = queues.keys().collect();
    names.sort();
    let mut expected = topology.queues();
    expected.sort();
    assert_eq!(names, expected.iter().collect::<Vec<_>>());
    for (name, (kind, _)) in &queues {
        assert_eq!(kind, "quorum", "{name}");
    }

    let work = format!("{}.command.test.DoThing", config.namespace);
    let (_, arguments) = &queues[&work];
    assert_eq!(
        arguments["x-delivery-limit"],
        Value::from(config.retry.max_attempts)
    );
    assert_eq!(arguments["x-dead-letter-strategy"], "at-least-once");
    assert_eq!(arguments["x-overflow"], "reject-publish");
    assert_eq!(
        arguments["x-dead-letter-routing-key"],
        format!("{work}.dlq")
    );

    for delay in topology.retry_delays() {
        let retry = bus_rabbitmq::Naming::retry_queue(&work, *delay);
        let (_, arguments) = &queues[&retry];
        assert_eq!(
            arguments["x-dead-letter-strategy"], "at-least-once",
            "{retry}"
        );
        assert_eq!(arguments["x-overflow"], "reject-publish", "{retry}");
        assert_eq!(arguments["x-dead-letter-routing-key"], work.as_str());
    }
    let (_, arguments) = &queues[&format!("{work}.dlq")];
    assert!(!arguments.contains_key("x-dead-letter-strategy"));
    assert!(!arguments.contains_key("x-delivery-limit"));

    publisher.close();
    cleanup(&topology).await;
}

#[tokio::test]
async fn a_message_requeued_past_the_delivery_limit_is_dead_lettered_to_its_dlq() {
    let config = quorum_config();
    let record = Record::default();
    let topology = config.topology(&recording_handlers(&record));
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();
    publisher.send(&DoThing { n: 7 }).await.unwrap();

    // A consumer that never settles the message: it gives it back every
    // time, as a consumer crashing on it would.
    let work = format!("{}.command.test.DoThing", config.namespace);
    let (checks, check_channel) = channel().await;
    let (connection, consume_channel) = channel().await;
    let mut consumer = consume_channel
        .basic_consume(
            work.as_str().into(),
            "crash-loop".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let dead_letter = format!("{work}.dlq");
    let mut deliveries = 0_u32;
    let parked = loop {
        tokio::select! {
            delivery = consumer.next() => {
                let delivery = delivery.expect("the consumer stays open").unwrap();
                deliveries += 1;
                assert!(
                    deliveries <= config.retry.max_attempts + 1,
                    "delivered {deliveries} times, past the delivery limit of {}",
                    config.retry.max_attempts
                );
                delivery
                    .nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() })
                    .await
                    .unwrap();
            }
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                if let Some(message) = get(&check_channel, &dead_letter).await {
                    break message;
                }
            }
        }
    };
    assert_eq!(parked.delivery.data, br#"{"n":7}"#);
    assert_eq!(
        header(&parked, "x-first-death-reason").as_deref(),
        Some("delivery_limit")
    );
    assert!(
        deliveries >= config.retry.max_attempts,
        "dead-lettered after {deliveries} deliveries only"
    );
    assert_eq!(message_count(&check_channel, &work).await, 0);

    let _ = connection.close(200, "OK".into()).await;
    let _ = checks.close(200, "OK".into()).await;
    publisher.close();
    cleanup(&topology).await;
}
