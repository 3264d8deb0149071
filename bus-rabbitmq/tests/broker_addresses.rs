//! Several broker addresses in `amqp_url`: the first that answers is used,
//! and with none answering publishes fail as unavailable.

mod common;

use std::time::Duration;

use bus_core::{CommandBusExt, DispatchError};
use bus_rabbitmq::{RabbitConfig, RabbitError, RabbitPublisher, RabbitWorker};
use common::*;

/// Nothing listens on port 1.
const DEAD: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

#[tokio::test]
async fn a_dead_first_address_is_skipped_for_publishing_and_consuming() {
    let base = config();
    let config = RabbitConfig {
        amqp_url: format!("{DEAD},{}", amqp_url()),
        shuffle_addresses: false,
        ..base
    };
    let record = Record::default();
    let handlers = recording_handlers(&record);
    let topology = config.topology(&handlers);
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .expect("the second address answers");
    let worker = RunningWorker::start(RabbitWorker::new(&handlers, config.clone()).unwrap());

    for n in 1..=3 {
        publisher.send(&DoThing { n }).await.unwrap();
    }
    let handled = eventually(Duration::from_secs(10), || async {
        let mut seen = record.list();
        seen.sort_unstable();
        (seen == [1, 2, 3]).then_some(seen)
    })
    .await;
    assert_eq!(handled, Some(vec![1, 2, 3]), "seen: {:?}", record.list());

    worker.stop().await;
    publisher.close();
    cleanup(&topology).await;
}

#[tokio::test]
async fn with_only_dead_addresses_a_publish_answers_unavailable() {
    let config = RabbitConfig {
        amqp_url: format!("{DEAD}, amqp://guest:guest@127.0.0.1:2/%2f"),
        confirm_timeout: Duration::from_secs(2),
        ..config()
    };
    let record = Record::default();
    let publisher =
        RabbitPublisher::new(&config, config.topology(&recording_handlers(&record))).unwrap();
    for _ in 0..2 {
        let answer =
            tokio::time::timeout(Duration::from_secs(10), publisher.send(&DoThing { n: 1 }))
                .await
                .expect("a publish answers within its confirm timeout");
        let error = answer.unwrap_err();
        assert!(
            matches!(error, DispatchError::Unavailable { .. }),
            "{error:?}"
        );
    }
}

#[tokio::test]
async fn a_malformed_address_is_a_configuration_error_naming_its_position() {
    let config = RabbitConfig {
        amqp_url: format!("{}, http://guest:hunter2@127.0.0.1:5672/", amqp_url()),
        ..config()
    };
    let record = Record::default();
    let handlers = recording_handlers(&record);
    let error = RabbitPublisher::new(&config, config.topology(&handlers)).unwrap_err();
    assert!(matches!(error, RabbitError::InvalidConfig(_)), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("address 2 of 2"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    let error = RabbitWorker::new(&handlers, config).unwrap_err();
    assert!(error.to_string().contains("address 2 of 2"), "{error}");
}
