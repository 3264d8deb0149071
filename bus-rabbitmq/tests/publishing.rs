//! The publisher against the real broker: confirms, persistence, topology,
//! failing fast, recovering.

mod common;

use std::time::{Duration, Instant};

use bus_core::{
    command_fn, CommandBusExt, DispatchError, Envelope, EventBusExt, HandlerError, Handlers,
};
use bus_rabbitmq::{
    lapin::{
        options::{ExchangeDeclareOptions, ExchangeDeleteOptions, QueueDeclareOptions},
        types::{AMQPValue, FieldTable, LongString},
        ExchangeKind,
    },
    wire::headers,
    RabbitConfig, RabbitPublisher,
};
use common::*;

fn handlers() -> Handlers {
    Handlers::builder()
        .command::<DoThing, _>(command_fn(|_: DoThing, _| async {
            Ok::<_, HandlerError>(())
        }))
        .subscribe::<ThingDone, _>(
            "audit",
            bus_core::event_fn(|_: ThingDone, _| async { Ok::<_, HandlerError>(()) }),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_dispatched_command_is_confirmed_and_stored_persistent_with_its_metadata() {
    let config = config();
    let topology = config.topology(&handlers());
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();
    let envelope = Envelope::new(&DoThing { n: 42 })
        .unwrap()
        .with_header("tenant", "acme");
    let id = envelope.id;
    bus_core::CommandBus::send_envelope(&publisher, envelope.clone())
        .await
        .unwrap();

    let (connection, channel) = channel().await;
    let queue = format!("{}.command.test.DoThing", config.namespace);
    let message = get(&channel, &queue).await.expect("the command is queued");
    let properties = &message.delivery.properties;
    assert_eq!(*properties.delivery_mode(), Some(2));
    assert_eq!(
        properties.message_id().as_ref().unwrap().as_str(),
        id.to_string()
    );
    assert_eq!(properties.kind().as_ref().unwrap().as_str(), "test.DoThing");
    assert_eq!(
        properties.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    assert!(properties.timestamp().is_some());
    assert_eq!(header(&message, "tenant").as_deref(), Some("acme"));
    assert_eq!(
        header(&message, "traceparent"),
        envelope.headers.get("traceparent").cloned()
    );
    assert_eq!(
        header(&message, "correlation-id"),
        Some(id.to_string()),
        "every envelope header travels"
    );
    assert_eq!(header_u32(&message, headers::VERSION), Some(1));
    assert_eq!(header_u32(&message, headers::ATTEMPT), Some(1));
    assert_eq!(message.delivery.data, br#"{"n":42}"#);

    publisher.close();
    let _ = connection.close(200, "OK".into()).await;
    cleanup(&topology).await;
}

#[tokio::test]
async fn declared_topology_matches_the_naming_scheme_and_delay_queues_carry_their_ttl() {
    let config = config();
    let topology = config.topology(&handlers());
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();
    let ns = &config.namespace;
    let (connection, channel) = channel().await;

    for (exchange, kind) in [
        (format!("{ns}.commands"), ExchangeKind::Direct),
        (format!("{ns}.events"), ExchangeKind::Direct),
        (format!("{ns}.events.unrouted"), ExchangeKind::Fanout),
    ] {
        channel
            .exchange_declare(
                exchange.as_str().into(),
                kind,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("exchange {exchange} exists: {e}"));
    }
    let command = format!("{ns}.command.test.DoThing");
    let subscriber = format!("{ns}.event.test.ThingDone.audit");
    let mut expected = vec![format!("{ns}.events.unrouted")];
    for queue in [&command, &subscriber] {
        expected.push(queue.clone());
        expected.push(format!("{queue}.dlq"));
        for delay in [50, 100, 200] {
            expected.push(format!("{queue}.retry.{delay}ms"));
        }
    }
    for queue in &expected {
        assert_eq!(message_count(&channel, queue).await, 0, "{queue} exists");
    }
    let mut declared = topology.queues();
    declared.sort();
    expected.sort();
    assert_eq!(declared, expected, "nothing else is declared");

    // Re-declaring with exactly the expected arguments is accepted (same
    // queue), with another TTL it is refused: the arguments are the ones we
    // expect.
    let retry = format!("{command}.retry.100ms");
    let args = |ttl: i64| {
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("classic")),
        );
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from("")),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(LongString::from(command.as_str())),
        );
        args
    };
    channel
        .queue_declare(
            retry.as_str().into(),
            QueueDeclareOptions::durable(),
            args(100),
        )
        .await
        .expect("same arguments: x-message-ttl=100, dead-lettering back to the work queue");
    let other = connection.create_channel().await.unwrap();
    let refused = other
        .queue_declare(
            retry.as_str().into(),
            QueueDeclareOptions::durable(),
            args(999),
        )
        .await;
    assert!(refused.is_err(), "a different TTL is refused: {refused:?}");

    publisher.close();
    let _ = connection.close(200, "OK".into()).await;
    cleanup(&topology).await;
}

#[tokio::test]
async fn publishing_to_an_unreachable_broker_fails_fast_with_unavailable() {
    let config = RabbitConfig {
        amqp_url: "amqp://guest:guest@127.0.0.1:1/%2f".to_owned(),
        confirm_timeout: Duration::from_secs(2),
        ..config()
    };
    let publisher = RabbitPublisher::new(&config, config.topology(&handlers())).unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let error = publisher.send(&DoThing { n: 1 }).await.unwrap_err();
        assert!(
            matches!(error, DispatchError::Unavailable { .. }),
            "{error:?}"
        );
        assert!(error.is_unavailable());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let error = publisher.publish(&ThingDone { n: 1 }).await.unwrap_err();
        assert!(
            matches!(error, DispatchError::Unavailable { .. }),
            "{error:?}"
        );
    }
    assert!(
        RabbitPublisher::connect(&config, config.topology(&handlers()))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_command_nobody_consumes_is_refused_as_unroutable() {
    let config = config();
    // A publisher-only process that knows no command queue.
    let topology = config.empty_topology();
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();
    let error = publisher.send(&DoThing { n: 1 }).await.unwrap_err();
    assert!(matches!(error, DispatchError::Refused { .. }), "{error:?}");
    // The channel stays usable: the next publish goes through.
    publisher.publish(&ThingDone { n: 1 }).await.unwrap();
    publisher.close();
    cleanup(&topology).await;
}

#[tokio::test]
async fn a_publisher_whose_exchange_vanished_reconnects_and_declares_it_again() {
    let config = config();
    let topology = config.topology(&handlers());
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();
    publisher.send(&DoThing { n: 1 }).await.unwrap();

    let (connection, channel) = channel().await;
    channel
        .exchange_delete(
            format!("{}.commands", config.namespace).as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await
        .unwrap();
    // The broker closes the channel (404): that publish fails as unavailable,
    // the broken channel and its connection are dropped...
    let error = publisher.send(&DoThing { n: 2 }).await.unwrap_err();
    assert!(
        matches!(error, DispatchError::Unavailable { .. }),
        "{error:?}"
    );
    // ...and the next publish runs on a new connection that re-declared the
    // topology.
    publisher.send(&DoThing { n: 3 }).await.unwrap();
    let queue = format!("{}.command.test.DoThing", config.namespace);
    assert_eq!(message_count(&channel, &queue).await, 2);

    publisher.close();
    let _ = connection.close(200, "OK".into()).await;
    cleanup(&topology).await;
}

/// A command with no queue in the test topology.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Unrouted {
    n: u32,
}
impl bus_core::Message for Unrouted {
    const NAME: &'static str = "test.Unrouted";
}
impl bus_core::Command for Unrouted {}

#[tokio::test]
async fn many_concurrent_dispatches_share_one_pooled_channel_and_each_gets_its_own_outcome() {
    // One channel for 200 concurrent publishes, one in ten unroutable: all
    // go through, and each caller gets the outcome of its own message (an
    // unroutable message is refused to its own caller, never to another).
    let config = RabbitConfig {
        publisher_channels: 1,
        ..config()
    };
    let topology = config.topology(&handlers());
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();
    let sends = (0..200u32).map(|n| {
        let publisher = publisher.clone();
        async move {
            if n % 10 == 0 {
                (n, publisher.send(&Unrouted { n }).await)
            } else {
                (n, publisher.send(&DoThing { n }).await)
            }
        }
    });
    let outcomes = futures::future::join_all(sends).await;
    for (n, outcome) in outcomes {
        if n % 10 == 0 {
            assert!(
                matches!(outcome, Err(DispatchError::Refused { .. })),
                "unroutable {n}: {outcome:?}"
            );
        } else {
            assert!(outcome.is_ok(), "routable {n}: {outcome:?}");
        }
    }

    let (connection, channel) = channel().await;
    let queue = format!("{}.command.test.DoThing", config.namespace);
    assert_eq!(message_count(&channel, &queue).await, 180);

    publisher.close();
    let _ = connection.close(200, "OK".into()).await;
    cleanup(&topology).await;
}

#[tokio::test]
async fn a_flood_past_a_command_queues_bound_is_refused_and_the_queue_keeps_what_it_holds() {
    let config = RabbitConfig {
        queue_max_length: Some(20),
        ..config()
    };
    let topology = config.topology(&handlers());
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();
    let mut refused = 0;
    for n in 0..60 {
        match publisher.send(&DoThing { n }).await {
            Ok(()) => assert!(n < 20, "command {n} accepted past the bound"),
            Err(error) => {
                // `Refused` is one the API answers with 503.
                assert!(matches!(error, DispatchError::Refused { .. }), "{error:?}");
                assert!(error.is_unavailable());
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 40, "every command past the bound is refused");
    let (connection, channel) = channel().await;
    let queue = topology.naming().command_queue("test.DoThing");
    assert_eq!(
        message_count(&channel, &queue).await,
        20,
        "nothing dropped, nothing more"
    );
    let alarms = std::process::Command::new("rabbitmq-diagnostics")
        .args(["-q", "alarms"])
        .output()
        .expect("rabbitmq-diagnostics runs");
    let alarms = String::from_utf8_lossy(&alarms.stdout);
    assert!(
        !alarms.contains("memory"),
        "the broker raised an alarm: {alarms}"
    );
    publisher.close();
    let _ = connection.close(200, "OK".into()).await;
    cleanup(&topology).await;
}

#[tokio::test]
async fn a_batch_of_events_is_published_with_pipelined_confirms_and_each_reaches_its_queues() {
    let config = config();
    let topology = config.topology(&handlers());
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();
    // Subscribed and unsubscribed events in one batch: the unsubscribed
    // ones go to the unrouted-events queue, none is returned.
    let envelopes: Vec<Envelope> = (0..40)
        .map(|n| {
            if n % 4 == 0 {
                Envelope::new(&NobodyCares { n }).unwrap()
            } else {
                Envelope::new(&ThingDone { n }).unwrap()
            }
        })
        .collect();
    let results = bus_core::EventBus::publish_batch(&publisher, envelopes).await;
    assert_eq!(results.len(), 40);
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    let (connection, channel) = channel().await;
    let audit = topology
        .naming()
        .subscriber_queue("test.ThingDone", "audit");
    assert_eq!(message_count(&channel, &audit).await, 30);
    let unrouted = format!("{}.events.unrouted", config.namespace);
    assert_eq!(message_count(&channel, &unrouted).await, 10);

    publisher.close();
    let _ = connection.close(200, "OK".into()).await;
    cleanup(&topology).await;
}

#[tokio::test]
async fn a_batch_of_events_to_an_unreachable_broker_fails_fast_with_unavailable() {
    let mut config = config();
    config.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".to_owned();
    config.confirm_timeout = Duration::from_millis(500);
    let topology = config.topology(&handlers());
    let publisher = RabbitPublisher::new(&config, topology).unwrap();
    let envelopes = vec![
        Envelope::new(&ThingDone { n: 1 }).unwrap(),
        Envelope::new(&ThingDone { n: 2 }).unwrap(),
    ];
    let started = Instant::now();
    let results = bus_core::EventBus::publish_batch(&publisher, envelopes).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        results
            .iter()
            .all(|result| matches!(result, Err(DispatchError::Unavailable { .. }))),
        "{results:?}"
    );
}
