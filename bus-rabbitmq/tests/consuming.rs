//! The worker against the real broker: acks, retries through delay queues,
//! dead letters, poison messages, events, graceful shutdown.

mod common;

use std::time::Duration;

use bus_core::{
    command_fn, event_fn, BreakerConfig, CircuitBreaker, CommandBusExt, EventBusExt, HandlerError,
    Handlers, MessageContext,
};
use bus_rabbitmq::{
    lapin::{
        options::BasicPublishOptions,
        types::{AMQPValue, FieldTable},
        BasicProperties,
    },
    wire::headers,
    RabbitConfig, RabbitPublisher, RabbitWorker,
};
use common::*;
use tokio::sync::mpsc;

#[tokio::test]
async fn a_handler_that_fails_twice_then_succeeds_is_applied_once_on_attempts_1_2_3() {
    let config = config();
    let attempts = Record::<u32>::default();
    let applied = Record::<u32>::default();
    let handlers = {
        let (attempts, applied) = (attempts.clone(), applied.clone());
        Handlers::builder()
            .command::<DoThing, _>(command_fn(
                move |command: DoThing, context: MessageContext| {
                    let (attempts, applied) = (attempts.clone(), applied.clone());
                    async move {
                        attempts.push(context.attempt());
                        assert_eq!(context.max_attempts(), 4);
                        if context.attempt() < 3 {
                            return Err(HandlerError::retryable("not yet"));
                        }
                        applied.push(command.n);
                        Ok(())
                    }
                },
            ))
            .build()
            .unwrap()
    };
    let worker = RabbitWorker::new(&handlers, config.clone()).unwrap();
    let topology = worker.topology().clone();
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();
    let running = RunningWorker::start(worker);

    publisher.send(&DoThing { n: 7 }).await.unwrap();
    eventually(Duration::from_secs(10), || async {
        (applied.len() == 1).then_some(())
    })
    .await
    .expect("applied after two retries");
    // A stopped worker has settled every delivery: with no message left in
    // any queue, nothing can come back.
    running.stop().await;
    assert_eq!(attempts.list(), [1, 2, 3]);
    assert_eq!(applied.list(), [7]);
    let (connection, channel) = channel().await;
    assert_eq!(leftover_messages(&channel, &topology).await, []);
    publisher.close();
    let _ = connection.close(200, "OK".into()).await;
    cleanup(&topology).await;
}

#[tokio::test]
async fn a_handler_failing_on_infrastructure_more_times_than_max_attempts_is_applied_and_not_dead_lettered(
) {
    let config = config();
    let failures = config.retry.max_attempts * 2;
    let attempts = Record::<u32>::default();
    let applied = Record::<u32>::default();
    let handlers = {
        let (attempts, applied) = (attempts.clone(), applied.clone());
        Handlers::builder()
            .command::<DoThing, _>(command_fn(
                move |command: DoThing, context: MessageContext| {
                    let (attempts, applied) = (attempts.clone(), applied.clone());
                    async move {
                        attempts.push(context.attempt());
                        if attempts.len() <= failures as usize {
                            return Err(HandlerError::infrastructure("pool timed out"));
                        }
                        applied.push(command.n);
                        Ok(())
                    }
                },
            ))
            .build()
            .unwrap()
    };
    let breaker = CircuitBreaker::new(BreakerConfig {
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        jitter: 0.5,
    });
    let worker = RabbitWorker::new(&handlers, config.clone())
        .unwrap()
        .with_breaker(breaker.clone());
    let topology = worker.topology().clone();
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();
    let running = RunningWorker::start(worker);

    publisher.send(&DoThing { n: 7 }).await.unwrap();
    eventually(Duration::from_secs(20), || async {
        (applied.len() == 1).then_some(())
    })
    .await
    .expect("applied once the infrastructure answered");
    running.stop().await;
    assert_eq!(applied.list(), [7]);
    assert!(
        attempts.list().iter().all(|attempt| *attempt == 1),
        "infrastructure failures never count as attempts: {:?}",
        attempts.list()
    );
    assert_eq!(breaker.paused(), None, "the breaker closed again");
    let (connection, channel) = channel().await;
    assert_eq!(leftover_messages(&channel, &topology).await, []);
    let dlq =
        bus_rabbitmq::Naming::dead_letter_queue(&topology.naming().command_queue("test.DoThing"));
    assert_eq!(
        message_count(&channel, &dlq).await,
        0,
        "nothing dead-lettered"
    );
    publisher.close();
    let _ = connection.close(200, "OK".into()).await;
    cleanup(&topology).await;
}

#[tokio::test]
async fn a_handler_that_always_fails_is_dead_lettered_with_its_error_after_max_attempts() {
    let config = config();
    let calls = Record::<u32>::default();
    let handlers = {
        let calls = calls.clone();
        Handlers::builder()
            .command::<DoThing, _>(command_fn(move |_: DoThing, context: MessageContext| {
                let calls = calls.clone();
                async move {
                    calls.push(context.attempt());
                    Err(HandlerError::retryable(format!(
                        "database unreachable on attempt {}",
                        context.attempt()
                    )))
                }
            }))
            .build()
            .unwrap()
    };
    let worker = RabbitWorker::new(&handlers, config.clone()).unwrap();
    let topology = worker.topology().clone();
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();
    let running = RunningWorker::start(worker);

    let envelope = bus_core::Envelope::new(&DoThing { n: 1 }).unwrap();
    let id = envelope.id.to_string();
    bus_core::CommandBus::send_envelope(&publisher, envelope)
        .await
        .unwrap();

    let (connection, channel) = channel().await;
    let queue = format!("{}.command.test.DoThing", config.namespace);
    let dead = wait_for_message(&channel, &format!("{queue}.dlq"), Duration::from_secs(10)).await;
    running.stop().await;
    assert_eq!(calls.list(), [1, 2, 3, 4], "exactly max_attempts calls");
    let error = header(&dead, headers::ERROR).unwrap();
    assert!(
        error.contains("database unreachable on attempt 4"),
        "{error}"
    );
    assert_eq!(header_u32(&dead, headers::ATTEMPTS), Some(4));
    assert_eq!(header(&dead, headers::ORIGINAL_QUEUE), Some(queue.clone()));
    assert!(header(&dead, headers::DEAD_LETTERED_AT).is_some());
    assert_eq!(
        dead.delivery
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .as_str(),
        id,
        "the same message"
    );
    assert_eq!(dead.delivery.data, br#"{"n":1}"#);
    assert_eq!(leftover_messages(&channel, &topology).await, []);

    publisher.close();
    let _ = connection.close(200, "OK".into()).await;
    cleanup(&topology).await;
}

#[tokio::test]
async fn a_panicking_handler_is_retried_then_dead_lettered_with_the_panic_as_reason() {
    let config = config();
    let calls = Record::<u32>::default();
    let handlers = {
        let calls = calls.clone();
        Handlers::builder()
            .command::<DoThing, _>(command_fn(move |_: DoThing, context: MessageContext| {
                calls.push(context.attempt());
                async move { panic!("stock table corrupted") }
            }))
            .build()
            .unwrap()
    };
    let worker = RabbitWorker::new(&handlers, config.clone()).unwrap();
    let topology = worker.topology().clone();
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();
    let running = RunningWorker::start(worker);

    publisher.send(&DoThing { n: 2 }).await.unwrap();

    let (connection, channel) = channel().await;
    let queue = format!("{}.command.test.DoThing", config.namespace);
    let dead = wait_for_message(&channel, &format!("{queue}.dlq"), Duration::from_secs(10)).await;
    assert_eq!(
        calls.list(),
        [1, 2, 3, 4],
        "a panic consumes attempts like a retryable error"
    );
    assert_eq!(
        header(&dead, headers::ERROR).as_deref(),
        Some("handler panicked: stock table corrupted")
    );
    assert_eq!(header_u32(&dead, headers::ATTEMPTS), Some(4));

    running.stop().await;
    publisher.close();
    let _ = connection.close(200, "OK".into()).await;
    cleanup(&topology).await;
}

#[tokio::test]
async fn undecodable_unknown_and_too_new_messages_go_straight_to_the_dead_letter_queue() {
    let config = config();
    let calls = Record::<u32>::default();
    let handlers = recording_handlers(&calls);
    let worker = RabbitWorker::new(&handlers, config.clone()).unwrap();
    let topology = worker.topology().clone();
    let (connection, channel) = channel().await;
    let queue = format!("{}.command.test.DoThing", config.namespace);
    let running = RunningWorker::start(worker);
    // Wait for the worker's declaration before publishing raw.
    eventually(Duration::from_secs(10), || async {
        let exists = channel_exists(&connection, &queue).await;
        exists.then_some(())
    })
    .await
    .expect("the worker declared its queue");

    let raw = |id: &str, kind: &str| {
        BasicProperties::default()
            .with_message_id(id.into())
            .with_type(kind.into())
            .with_delivery_mode(2)
    };
    let id = uuid::Uuid::now_v7().to_string();
    for (properties, body) in [
        (raw(&id, "test.DoThing"), &b"this is not json"[..]),
        (raw(&id, "test.SomethingElse"), &br#"{"n":1}"#[..]),
        (raw(&id, "test.DoThing"), &br#"{"wrong":"shape"}"#[..]),
        (raw("not-a-uuid", "test.DoThing"), &br#"{"n":1}"#[..]),
        (BasicProperties::default(), &br#"{"n":1}"#[..]),
        (
            raw(&id, "test.DoThing").with_headers(FieldTable::from(
                [(headers::VERSION.into(), AMQPValue::LongUInt(2))]
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>(),
            )),
            &br#"{"n":1}"#[..],
        ),
    ] {
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .unwrap();
    }

    let dlq = format!("{queue}.dlq");
    let mut errors = Vec::new();
    for _ in 0..6 {
        let dead = wait_for_message(&channel, &dlq, Duration::from_secs(10)).await;
        errors.push(header(&dead, headers::ERROR).unwrap());
    }
    running.stop().await;
    assert!(calls.list().is_empty(), "the handler never ran");
    // Handled concurrently: the dead letters come in any order.
    for expected in [
        "body is not JSON",
        "no handler for message type test.SomethingElse",
        "cannot decode test.DoThing",
        "is not a UUID",
        "missing message_id",
        "test.DoThing version 2 is not supported: this consumer reads versions up to 1",
    ] {
        assert!(
            errors.iter().filter(|e| e.contains(expected)).count() == 1,
            "{expected} in {errors:?}"
        );
    }
    // Nothing loops, and each message was dead-lettered exactly once.
    assert_eq!(leftover_messages(&channel, &topology).await, []);

    let _ = connection.close(200, "OK".into()).await;
    cleanup(&topology).await;
}

/// Whether `queue` exists (a failed passive declare closes the channel, so
/// each probe uses a channel of its own).
async fn channel_exists(connection: &bus_rabbitmq::lapin::Connection, queue: &str) -> bool {
    let probe = connection.create_channel().await.unwrap();
    let exists = probe
        .queue_declare(
            queue.into(),
            bus_rabbitmq::lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .is_ok();
    let _ = probe.close(200, "OK".into()).await;
    exists
}

#[tokio::test]
async fn an_event_reaches_both_subscribers_and_an_event_without_subscriber_is_kept_as_unrouted() {
    let config = config();
    let audit = Record::<u32>::default();
    let mailer = Record::<u32>::default();
    let handlers = {
        let (audit, mailer) = (audit.clone(), mailer.clone());
        Handlers::builder()
            .subscribe::<ThingDone, _>(
                "audit",
                event_fn(move |event: ThingDone, _| {
                    let audit = audit.clone();
                    async move {
                        audit.push(event.n);
                        Ok::<_, HandlerError>(())
                    }
                }),
            )
            .subscribe::<ThingDone, _>(
                "mailer",
                event_fn(move |event: ThingDone, _| {
                    let mailer = mailer.clone();
                    async move {
                        mailer.push(event.n);
                        Ok::<_, HandlerError>(())
                    }
                }),
            )
            .build()
            .unwrap()
    };
    let worker = RabbitWorker::new(&handlers, config.clone()).unwrap();
    let topology = worker.topology().clone();
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();
    let running = RunningWorker::start(worker);

    publisher.publish(&ThingDone { n: 5 }).await.unwrap();
    publisher
        .publish(&NobodyCares { n: 6 })
        .await
        .expect("an event without subscriber is accepted");

    eventually(Duration::from_secs(10), || async {
        (audit.len() == 1 && mailer.len() == 1).then_some(())
    })
    .await
    .expect("both subscribers got the event");
    assert_eq!(audit.list(), [5]);
    assert_eq!(mailer.list(), [5]);

    let (connection, channel) = channel().await;
    let unrouted = format!("{}.events.unrouted", config.namespace);
    let kept = wait_for_message(&channel, &unrouted, Duration::from_secs(5)).await;
    assert_eq!(
        kept.delivery.properties.kind().as_ref().unwrap().as_str(),
        "test.NobodyCares"
    );
    assert_eq!(message_count(&channel, &unrouted).await, 0, "only that one");

    running.stop().await;
    publisher.close();
    let _ = connection.close(200, "OK".into()).await;
    cleanup(&topology).await;
}

#[tokio::test]
async fn on_shutdown_messages_being_handled_finish_and_are_acknowledged() {
    let config = RabbitConfig {
        concurrency: 4,
        ..config()
    };
    let (started_tx, mut started) = mpsc::unbounded_channel::<u32>();
    let finished = Record::<u32>::default();
    let calls = Record::<u32>::default();
    let handlers = {
        let (finished, calls) = (finished.clone(), calls.clone());
        Handlers::builder()
            .command::<DoThing, _>(command_fn(move |command: DoThing, _| {
                let (finished, calls, started_tx) =
                    (finished.clone(), calls.clone(), started_tx.clone());
                async move {
                    calls.push(command.n);
                    let _ = started_tx.send(command.n);
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    finished.push(command.n);
                    Ok::<_, HandlerError>(())
                }
            }))
            .build()
            .unwrap()
    };
    let worker = RabbitWorker::new(&handlers, config.clone()).unwrap();
    let topology = worker.topology().clone();
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();
    for n in 0..4 {
        publisher.send(&DoThing { n }).await.unwrap();
    }
    let running = RunningWorker::start(worker);
    for _ in 0..4 {
        tokio::time::timeout(Duration::from_secs(10), started.recv())
            .await
            .expect("all four handlers start")
            .unwrap();
    }
    assert!(finished.list().is_empty(), "still being handled");

    running.stop().await;
    let mut done = finished.list();
    done.sort();
    assert_eq!(
        done,
        [0, 1, 2, 3],
        "in-flight handlers finished before run returned"
    );

    let (connection, channel) = channel().await;
    let queue = format!("{}.command.test.DoThing", config.namespace);
    assert_eq!(
        message_count(&channel, &queue).await,
        0,
        "all acknowledged: none requeued for redelivery"
    );
    assert_eq!(calls.len(), 4, "each handled once");
    publisher.close();
    let _ = connection.close(200, "OK".into()).await;
    cleanup(&topology).await;
}

#[tokio::test]
async fn a_worker_whose_queue_vanished_declares_it_again_and_keeps_consuming() {
    let config = config();
    let applied = Record::<u32>::default();
    let handlers = recording_handlers(&applied);
    let worker = RabbitWorker::new(&handlers, config.clone()).unwrap();
    let topology = worker.topology().clone();
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();
    let running = RunningWorker::start(worker);
    publisher.send(&DoThing { n: 1 }).await.unwrap();
    eventually(Duration::from_secs(10), || async {
        (applied.len() == 1).then_some(())
    })
    .await
    .expect("first command handled");

    // Deleting the queue makes the broker cancel the worker's consumer: the
    // worker reconnects, re-declares and consumes again by itself.
    let (connection, channel) = channel().await;
    let queue = format!("{}.command.test.DoThing", config.namespace);
    channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    let sent = eventually(Duration::from_secs(10), || async {
        publisher.send(&DoThing { n: 2 }).await.ok()
    })
    .await;
    assert!(sent.is_some(), "the queue is back and bound");
    eventually(Duration::from_secs(10), || async {
        (applied.len() == 2).then_some(())
    })
    .await
    .expect("second command handled after the worker recovered");
    assert_eq!(applied.list(), [1, 2]);

    running.stop().await;
    publisher.close();
    let _ = connection.close(200, "OK".into()).await;
    cleanup(&topology).await;
}

/// Pausing a queue lets the handler already running finish and be
/// acknowledged, then stops consuming: later messages wait in the queue,
/// with no consumer on it, until the queue is resumed.
#[tokio::test]
async fn a_paused_queue_settles_its_in_flight_message_and_keeps_the_others_until_resumed() {
    let config = RabbitConfig {
        prefetch: 4,
        ..config()
    };
    let applied = Record::<u32>::default();
    let (started, mut running_handler) = mpsc::unbounded_channel::<u32>();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let handlers = {
        let (applied, gate) = (applied.clone(), gate.clone());
        Handlers::builder()
            .command::<DoThing, _>(command_fn(move |command: DoThing, _| {
                let (applied, gate, started) = (applied.clone(), gate.clone(), started.clone());
                async move {
                    if command.n == 1 {
                        let _ = started.send(command.n);
                        let _permit = gate.acquire().await;
                    }
                    applied.push(command.n);
                    Ok(())
                }
            }))
            .build()
            .unwrap()
    };
    let worker = RabbitWorker::new(&handlers, config.clone()).unwrap();
    let topology = worker.topology().clone();
    let control = worker.control().clone();
    let queue = control.queues()[0].queue.clone();
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();
    let running = RunningWorker::start(worker);
    let (connection, channel) = channel().await;

    publisher.send(&DoThing { n: 1 }).await.unwrap();
    assert_eq!(running_handler.recv().await, Some(1));
    assert_eq!(control.pause(&queue), Ok(true));
    for n in 2..=4 {
        publisher.send(&DoThing { n }).await.unwrap();
    }
    // The running handler finishes and is acknowledged, never redelivered.
    gate.add_permits(1);
    let consumers = |channel: bus_rabbitmq::lapin::Channel, queue: String| async move {
        channel
            .queue_declare(
                queue.as_str().into(),
                bus_rabbitmq::lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .consumer_count()
    };
    eventually(Duration::from_secs(10), || async {
        (consumers(channel.clone(), queue.clone()).await == 0
            && message_count(&channel, &queue).await == 3)
            .then_some(())
    })
    .await
    .expect("consumer cancelled, three messages waiting");
    assert_eq!(applied.list(), [1]);
    assert_eq!(control.paused(), std::slice::from_ref(&queue));

    assert_eq!(control.resume(&queue), Ok(true));
    eventually(Duration::from_secs(10), || async {
        (applied.len() == 4).then_some(())
    })
    .await
    .expect("drained after resume");
    running.stop().await;
    let mut seen = applied.list();
    seen.sort_unstable();
    assert_eq!(seen, [1, 2, 3, 4]);
    assert_eq!(leftover_messages(&channel, &topology).await, []);
    publisher.close();
    let _ = connection.close(200, "OK".into()).await;
    cleanup(&topology).await;
}

/// The paused set belongs to the worker: a queue paused before the worker
/// starts is never consumed, and a reconnection (here: another queue
/// deleted under the worker) does not resume it.
#[tokio::test]
async fn a_paused_queue_stays_paused_across_a_reconnection() {
    let config = config();
    let commands = Record::<u32>::default();
    let events = Record::<u32>::default();
    let handlers = {
        let (commands, events) = (commands.clone(), events.clone());
        Handlers::builder()
            .command::<DoThing, _>(command_fn(move |command: DoThing, _| {
                let commands = commands.clone();
                async move {
                    commands.push(command.n);
                    Ok(())
                }
            }))
            .subscribe::<ThingDone, _>(
                "audit",
                event_fn(move |event: ThingDone, _| {
                    let events = events.clone();
                    async move {
                        events.push(event.n);
                        Ok::<_, HandlerError>(())
                    }
                }),
            )
            .build()
            .unwrap()
    };
    let worker = RabbitWorker::new(&handlers, config.clone()).unwrap();
    let topology = worker.topology().clone();
    let control = worker.control().clone();
    let paused = format!("{}.command.test.DoThing", config.namespace);
    let other = format!("{}.event.test.ThingDone.audit", config.namespace);
    control.set_paused([paused.as_str()]);
    let publisher = RabbitPublisher::connect(&config, topology.clone())
        .await
        .unwrap();
    let running = RunningWorker::start(worker);
    let (connection, channel) = channel().await;

    publisher.publish(&ThingDone { n: 1 }).await.unwrap();
    publisher.send(&DoThing { n: 1 }).await.unwrap();
    eventually(Duration::from_secs(10), || async {
        (events.len() == 1).then_some(())
    })
    .await
    .expect("the other queue is consumed");
    // The broker cancels the consumer of a deleted queue: the worker
    // reconnects, declares everything again and consumes.
    channel
        .queue_delete(other.as_str().into(), Default::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(10), || async {
        publisher.publish(&ThingDone { n: 2 }).await.ok()?;
        (events.len() >= 2).then_some(())
    })
    .await
    .expect("the worker reconnected");
    assert_eq!(message_count(&channel, &paused).await, 1);
    assert!(commands.list().is_empty(), "a paused queue is not consumed");

    control.resume(&paused).unwrap();
    eventually(Duration::from_secs(10), || async {
        (commands.len() == 1).then_some(())
    })
    .await
    .expect("consumed once resumed");
    running.stop().await;
    publisher.close();
    let _ = connection.close(200, "OK".into()).await;
    cleanup(&topology).await;
}

/// Batches: a handler that inserts each batch of `DoThing` in one
/// transaction of a real PostgreSQL (a fresh database per test from
/// `#[sqlx::test]`, on the server at `DATABASE_URL`). `n = 13` breaks the
/// table's check constraint: a poison message the database itself refuses,
/// aborting the whole transaction it is in.
mod batches {
    use std::{
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        },
        time::Duration,
    };

    use bus_core::{
        BatchConfig, BatchHandler, BatchOutcome, CommandBusExt, HandlerError, Handlers,
        MessageContext,
    };
    use bus_rabbitmq::{wire::headers, RabbitError, RabbitPublisher, RabbitWorker};
    use sqlx::PgPool;

    use super::common::*;

    const POISON: i32 = 13;

    #[derive(Clone)]
    struct InsertAll {
        pool: PgPool,
        calls: Record<usize>,
        fail_first_commit: Arc<AtomicBool>,
    }

    impl BatchHandler<DoThing> for InsertAll {
        async fn handle_batch(&self, batch: &[(DoThing, MessageContext)]) -> BatchOutcome {
            self.calls.push(batch.len());
            let mut tx = self.pool.begin().await?;
            for (thing, _) in batch {
                sqlx::query("INSERT INTO things (n) VALUES ($1)")
                    .bind(i32::try_from(thing.n).unwrap())
                    .execute(&mut *tx)
                    .await?;
            }
            if self.fail_first_commit.swap(false, Ordering::SeqCst) {
                return Err(HandlerError::retryable("could not serialize access"));
            }
            tx.commit().await?;
            Ok(batch.iter().map(|_| Ok(())).collect())
        }
    }

    async fn setup(pool: &PgPool) -> InsertAll {
        sqlx::raw_sql("CREATE TABLE things (n INT PRIMARY KEY CHECK (n <> 13))")
            .execute(pool)
            .await
            .unwrap();
        InsertAll {
            pool: pool.clone(),
            calls: Record::default(),
            fail_first_commit: Arc::default(),
        }
    }

    async fn applied(pool: &PgPool) -> Vec<i32> {
        sqlx::query_scalar("SELECT n FROM things ORDER BY n")
            .fetch_all(pool)
            .await
            .unwrap()
    }

    /// Publishes `ns` while no worker runs, then starts one taking batches of
    /// `size` (run when full: the linger is longer than the test), so the
    /// batches are exactly the published messages in order.
    async fn run_batches(
        handler: &InsertAll,
        size: usize,
        ns: impl IntoIterator<Item = u32>,
        settled: impl Fn(&[i32]) -> bool,
    ) -> bus_rabbitmq::Topology {
        let config = config();
        let handlers = Handlers::builder()
            .command_batch::<DoThing, _>(
                handler.clone(),
                BatchConfig::new(size, Duration::from_secs(60)),
            )
            .build()
            .unwrap();
        let worker = RabbitWorker::new(&handlers, config.clone()).unwrap();
        let topology = worker.topology().clone();
        let publisher = RabbitPublisher::connect(&config, topology.clone())
            .await
            .unwrap();
        for n in ns {
            publisher.send(&DoThing { n }).await.unwrap();
        }
        let running = RunningWorker::start(worker);
        eventually(Duration::from_secs(20), || async {
            settled(&applied(&handler.pool).await).then_some(())
        })
        .await
        .expect("the batch was applied");
        running.stop().await;
        publisher.close();
        topology
    }

    #[sqlx::test]
    async fn a_poison_message_in_the_middle_of_a_batch_is_dead_lettered_alone_with_its_reason(
        pool: PgPool,
    ) {
        let handler = setup(&pool).await;
        let ns: Vec<u32> = (9..=17).collect();
        let expected: Vec<i32> = (9..=17).filter(|n| *n != POISON).collect();
        let topology =
            run_batches(&handler, ns.len(), ns.clone(), |applied| applied.len() == 8).await;

        assert_eq!(applied(&pool).await, expected, "every neighbour applied");
        assert_eq!(
            handler.calls.list(),
            [vec![9], vec![1; 9]].concat(),
            "one batch, then each message alone"
        );
        let (connection, channel) = channel().await;
        let queue = topology.naming().command_queue("test.DoThing");
        let dead =
            wait_for_message(&channel, &format!("{queue}.dlq"), Duration::from_secs(10)).await;
        let body: serde_json::Value = serde_json::from_slice(&dead.delivery.data).unwrap();
        assert_eq!(body["n"], POISON);
        let error = header(&dead, headers::ERROR).unwrap();
        assert!(error.contains("things_n_check"), "the reason: {error}");
        assert_eq!(header_u32(&dead, headers::ATTEMPTS), Some(1));
        assert_eq!(
            leftover_messages(&channel, &topology).await,
            [],
            "every other delivery acknowledged"
        );
        let _ = connection.close(200, "OK".into()).await;
        cleanup(&topology).await;
    }

    #[sqlx::test]
    async fn a_batch_whose_transaction_fails_once_is_applied_exactly_once_per_message(
        pool: PgPool,
    ) {
        let handler = setup(&pool).await;
        handler.fail_first_commit.store(true, Ordering::SeqCst);
        let topology = run_batches(&handler, 5, 1..=5, |applied| applied.len() == 5).await;

        // A second application would fail on the primary key and end in
        // the dead-letter queue, which `leftover_messages` would show.
        assert_eq!(applied(&pool).await, [1, 2, 3, 4, 5]);
        assert_eq!(handler.calls.list(), [5, 1, 1, 1, 1, 1]);
        let (connection, channel) = channel().await;
        assert_eq!(leftover_messages(&channel, &topology).await, []);
        let _ = connection.close(200, "OK".into()).await;
        cleanup(&topology).await;
    }

    #[sqlx::test]
    async fn consecutive_full_batches_each_run_in_one_call(pool: PgPool) {
        let handler = setup(&pool).await;
        let topology = run_batches(&handler, 4, 100..112, |applied| applied.len() == 12).await;

        assert_eq!(applied(&pool).await, (100..112).collect::<Vec<_>>());
        assert_eq!(handler.calls.list(), [4, 4, 4]);
        let (connection, channel) = channel().await;
        assert_eq!(leftover_messages(&channel, &topology).await, []);
        let _ = connection.close(200, "OK".into()).await;
        cleanup(&topology).await;
    }

    #[sqlx::test]
    async fn a_shutdown_while_a_batch_is_being_collected_gives_its_deliveries_back(pool: PgPool) {
        let handler = setup(&pool).await;
        let config = config();
        let handlers = |size| {
            Handlers::builder()
                .command_batch::<DoThing, _>(
                    handler.clone(),
                    BatchConfig::new(size, Duration::from_secs(60)),
                )
                .build()
                .unwrap()
        };
        let worker = RabbitWorker::new(&handlers(50), config.clone()).unwrap();
        let topology = worker.topology().clone();
        let publisher = RabbitPublisher::connect(&config, topology.clone())
            .await
            .unwrap();
        for n in 1..=3 {
            publisher.send(&DoThing { n }).await.unwrap();
        }
        let running = RunningWorker::start(worker);
        let (connection, channel) = channel().await;
        let queue = topology.naming().command_queue("test.DoThing");
        // Delivered to the worker, which waits for 47 more or the linger.
        eventually(Duration::from_secs(10), || async {
            (message_count(&channel, &queue).await == 0).then_some(())
        })
        .await
        .expect("the worker took the three deliveries");

        running.stop().await;
        assert!(handler.calls.list().is_empty(), "the batch never started");
        assert_eq!(applied(&pool).await, [] as [i32; 0]);
        assert_eq!(message_count(&channel, &queue).await, 3, "all given back");

        // The next worker applies them.
        let running = RunningWorker::start(RabbitWorker::new(&handlers(3), config).unwrap());
        eventually(Duration::from_secs(10), || async {
            (applied(&pool).await.len() == 3).then_some(())
        })
        .await
        .expect("applied by the next worker");
        running.stop().await;
        assert_eq!(applied(&pool).await, [1, 2, 3]);
        assert_eq!(leftover_messages(&channel, &topology).await, []);
        publisher.close();
        let _ = connection.close(200, "OK".into()).await;
        cleanup(&topology).await;
    }

    #[sqlx::test]
    async fn a_batch_larger_than_the_prefetch_is_refused_at_start(pool: PgPool) {
        let handler = setup(&pool).await;
        let mut config = config();
        config.prefetch = 10;
        let handlers = Handlers::builder()
            .command_batch::<DoThing, _>(handler, BatchConfig::new(11, Duration::from_millis(5)))
            .build()
            .unwrap();
        let refused = RabbitWorker::new(&handlers, config).unwrap_err();
        assert!(
            matches!(&refused, RabbitError::InvalidConfig(reason) if reason.contains("prefetch")),
            "{refused}"
        );
    }
}
