//! The async bus queues messages for tokio workers: `dispatch` only promises
//! that the message will be applied or kept as a dead letter.
//!
//! `shutdown()` waits for everything accepted, so it is how these tests wait
//! for handlers to finish; every wait is bounded so a bug fails the test
//! instead of hanging it.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bus_core::{
    command_fn, event_fn, AsyncBus, AsyncBusConfig, BreakerConfig, CircuitBreaker, Command,
    CommandBus, CommandBusExt, DispatchError, Envelope, Event, EventBusExt, HandlerError, Handlers,
    InMemoryDeadLetters, Message, MessageContext, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, Notify, Semaphore};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ship {
    order: u32,
}
impl Message for Ship {
    const NAME: &'static str = "test.Ship";
}
impl Command for Ship {}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Shipped {
    order: u32,
}
impl Message for Shipped {
    const NAME: &'static str = "test.Shipped";
}
impl Event for Shipped {}

/// Retries without noticeable delay, so tests exercise the schedule, not the clock.
fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(1),
        multiplier: 1.0,
        max_backoff: Duration::from_millis(1),
    }
}

fn config(capacity: usize, retry: RetryPolicy) -> AsyncBusConfig {
    AsyncBusConfig {
        capacity,
        concurrency: 4,
        retry,
        drain_timeout: Duration::from_secs(30),
    }
}

/// Starts a bus whose dead letters the test can read.
fn start(handlers: Handlers, config: AsyncBusConfig) -> (AsyncBus, InMemoryDeadLetters) {
    let dead_letters = InMemoryDeadLetters::default();
    let bus = AsyncBus::start_with_dead_letters(handlers, config, Arc::new(dead_letters.clone()));
    (bus, dead_letters)
}

/// Awaits `future`, failing the test instead of hanging if the bus is stuck.
async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .expect("the bus got stuck")
}

/// Records the attempt number of every call (shared between handler and test).
#[derive(Clone, Default)]
struct Attempts(Arc<Mutex<Vec<u32>>>);

impl Attempts {
    fn record(&self, context: &MessageContext) -> u32 {
        self.0.lock().unwrap().push(context.attempt());
        context.attempt()
    }

    fn get(&self) -> Vec<u32> {
        self.0.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn dispatch_returns_before_the_handler_has_run() {
    let gate = Arc::new(Notify::new());
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let handlers = Handlers::builder()
        .command(command_fn({
            let gate = gate.clone();
            move |ship: Ship, _| {
                let (gate, done_tx) = (gate.clone(), done_tx.clone());
                async move {
                    gate.notified().await;
                    done_tx.send(ship.order).unwrap();
                    Ok(())
                }
            }
        }))
        .build()
        .unwrap();
    let (bus, _) = start(handlers, config(10, fast_retry(1)));

    // The handler cannot finish until the gate opens, so returning at all
    // proves dispatch did not wait for it.
    bounded(bus.send(&Ship { order: 7 })).await.unwrap();
    assert!(done.try_recv().is_err(), "the handler has not finished yet");
    assert_eq!(bus.in_flight(), 1, "the command counts as in flight");

    gate.notify_one();
    assert_eq!(bounded(done.recv()).await, Some(7));
}

#[tokio::test]
async fn a_handler_failing_twice_then_succeeding_is_applied_once_on_the_third_attempt() {
    let attempts = Attempts::default();
    let applied = Arc::new(AtomicUsize::new(0));
    let handlers = Handlers::builder()
        .command(command_fn({
            let (attempts, applied) = (attempts.clone(), applied.clone());
            move |_: Ship, context| {
                let (attempts, applied) = (attempts.clone(), applied.clone());
                async move {
                    if attempts.record(&context) < 3 {
                        return Err(HandlerError::retryable("warehouse busy"));
                    }
                    applied.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }
        }))
        .build()
        .unwrap();
    let (bus, dead_letters) = start(handlers, config(10, fast_retry(5)));

    bus.send(&Ship { order: 1 }).await.unwrap();
    bounded(bus.shutdown()).await;

    assert_eq!(attempts.get(), [1, 2, 3]);
    assert_eq!(applied.load(Ordering::SeqCst), 1);
    assert!(dead_letters.is_empty());
}

#[tokio::test]
async fn a_handler_that_always_fails_is_dead_lettered_after_max_attempts_with_its_error() {
    let last_attempt_flags = Arc::new(Mutex::new(Vec::new()));
    let handlers = Handlers::builder()
        .command(command_fn({
            let flags = last_attempt_flags.clone();
            move |_: Ship, context: MessageContext| {
                let flags = flags.clone();
                async move {
                    flags.lock().unwrap().push(context.is_last_attempt());
                    Err(HandlerError::retryable("warehouse unreachable"))
                }
            }
        }))
        .build()
        .unwrap();
    let (bus, dead_letters) = start(handlers, config(10, fast_retry(3)));
    let envelope = Envelope::new(&Ship { order: 9 }).unwrap();
    let id = envelope.id;

    bus.send_envelope(envelope).await.unwrap();
    bounded(bus.shutdown()).await;

    assert_eq!(
        *last_attempt_flags.lock().unwrap(),
        [false, false, true],
        "three attempts, the handler told which one is the last"
    );
    let letters = dead_letters.list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].envelope.id, id);
    assert_eq!(letters[0].subscriber, None);
    assert_eq!(letters[0].attempts, 3);
    assert_eq!(letters[0].error, "warehouse unreachable");
}

#[tokio::test]
async fn a_permanent_error_is_dead_lettered_after_one_attempt() {
    let attempts = Attempts::default();
    let handlers = Handlers::builder()
        .command(command_fn({
            let attempts = attempts.clone();
            move |_: Ship, context| {
                let attempts = attempts.clone();
                async move {
                    attempts.record(&context);
                    Err(HandlerError::permanent("order does not exist"))
                }
            }
        }))
        .build()
        .unwrap();
    let (bus, dead_letters) = start(handlers, config(10, fast_retry(5)));

    bus.send(&Ship { order: 404 }).await.unwrap();
    bounded(bus.shutdown()).await;

    assert_eq!(attempts.get(), [1]);
    let letters = dead_letters.list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 1);
    assert_eq!(letters[0].error, "order does not exist");
}

#[tokio::test]
async fn an_undecodable_payload_is_dead_lettered_after_one_attempt_without_running_the_handler() {
    let runs = Arc::new(AtomicUsize::new(0));
    let handlers = Handlers::builder()
        .command(command_fn({
            let runs = runs.clone();
            move |_: Ship, _| {
                runs.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            }
        }))
        .build()
        .unwrap();
    let (bus, dead_letters) = start(handlers, config(10, fast_retry(5)));
    // What a broken producer could put on the wire: the right type name, a
    // payload of the wrong shape.
    let poison = bus_core::transport::envelope_from_parts(
        uuid::Uuid::now_v7(),
        Ship::NAME,
        1,
        chrono::Utc::now(),
        BTreeMap::new(),
        serde_json::value::RawValue::from_string(r#"{"order":"not a number"}"#.into()).unwrap(),
    );

    bus.send_envelope(poison.clone()).await.unwrap();
    bounded(bus.shutdown()).await;

    assert_eq!(runs.load(Ordering::SeqCst), 0);
    let letters = dead_letters.list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].envelope.id, poison.id);
    assert_eq!(
        letters[0].envelope.payload.get(),
        poison.payload.get(),
        "the payload is kept untouched for inspection"
    );
    assert_eq!(letters[0].attempts, 1);
    assert!(
        letters[0].error.starts_with("cannot decode test.Ship"),
        "{}",
        letters[0].error
    );
}

#[tokio::test]
async fn a_panicking_handler_is_retried_instead_of_lost() {
    let attempts = Attempts::default();
    let applied = Arc::new(AtomicUsize::new(0));
    let handlers = Handlers::builder()
        .command(command_fn({
            let (attempts, applied) = (attempts.clone(), applied.clone());
            move |_: Ship, context| {
                let (attempts, applied) = (attempts.clone(), applied.clone());
                async move {
                    if attempts.record(&context) == 1 {
                        panic!("bug on first delivery");
                    }
                    applied.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }
        }))
        .build()
        .unwrap();
    let (bus, dead_letters) = start(handlers, config(10, fast_retry(3)));

    bus.send(&Ship { order: 1 }).await.unwrap();
    bounded(bus.shutdown()).await;

    assert_eq!(attempts.get(), [1, 2]);
    assert_eq!(applied.load(Ordering::SeqCst), 1);
    assert!(dead_letters.is_empty());
}

#[tokio::test]
async fn a_handler_that_always_panics_ends_in_dead_letters() {
    let handlers = Handlers::builder()
        .command(command_fn(|_: Ship, _| async {
            panic!("always broken");
        }))
        .build()
        .unwrap();
    let (bus, dead_letters) = start(handlers, config(10, fast_retry(2)));

    bus.send(&Ship { order: 1 }).await.unwrap();
    bounded(bus.shutdown()).await;

    let letters = dead_letters.list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 2);
    assert_eq!(letters[0].error, "handler panicked: always broken");
}

/// A handler that waits for a permit of `gate` before applying the command.
fn gated_handlers(gate: Arc<Semaphore>, applied: Arc<AtomicUsize>) -> Handlers {
    Handlers::builder()
        .command(command_fn(move |_: Ship, _| {
            let (gate, applied) = (gate.clone(), applied.clone());
            async move {
                gate.acquire().await.unwrap().forget();
                applied.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_full_bus_refuses_at_once_with_saturated_and_still_applies_what_it_accepted() {
    let gate = Arc::new(Semaphore::new(0));
    let applied = Arc::new(AtomicUsize::new(0));
    let (bus, dead_letters) = start(
        gated_handlers(gate.clone(), applied.clone()),
        config(3, fast_retry(1)),
    );

    for order in 0..3 {
        bus.send(&Ship { order }).await.unwrap();
    }
    let refused = bounded(bus.send(&Ship { order: 3 })).await.unwrap_err();

    assert!(
        matches!(refused, DispatchError::Saturated { capacity: 3 }),
        "{refused:?}"
    );
    assert!(refused.is_unavailable(), "callers may try again later");
    assert_eq!(bus.in_flight(), 3);

    gate.add_permits(3);
    bounded(bus.shutdown()).await;
    assert_eq!(applied.load(Ordering::SeqCst), 3);
    assert!(dead_letters.is_empty());
}

#[tokio::test]
async fn an_event_that_does_not_fit_for_every_subscriber_is_refused_whole() {
    let runs = Arc::new(AtomicUsize::new(0));
    let subscriber = || {
        let runs = runs.clone();
        event_fn(move |_: Shipped, _| {
            runs.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        })
    };
    let handlers = Handlers::builder()
        .subscribe("invoicing", subscriber())
        .subscribe("tracking", subscriber())
        .build()
        .unwrap();
    let (bus, _) = start(handlers, config(1, fast_retry(1)));

    let refused = bus.publish(&Shipped { order: 1 }).await.unwrap_err();
    bounded(bus.shutdown()).await;

    assert!(matches!(refused, DispatchError::Saturated { capacity: 1 }));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "no subscriber got half an event"
    );
}

#[tokio::test]
async fn shutdown_waits_for_everything_accepted_then_dispatch_is_refused() {
    let gate = Arc::new(Semaphore::new(0));
    let applied = Arc::new(AtomicUsize::new(0));
    let (bus, dead_letters) = start(
        gated_handlers(gate.clone(), applied.clone()),
        config(100, fast_retry(1)),
    );
    let mut accepted = 0;
    for order in 0..5 {
        bus.send(&Ship { order }).await.unwrap();
        accepted += 1;
    }

    let shutdown = tokio::spawn({
        let bus = bus.clone();
        async move { bus.shutdown().await }
    });
    // Once the bus refuses new work, shutdown has started.
    bounded(async {
        loop {
            tokio::task::yield_now().await;
            match bus.send(&Ship { order: 99 }).await {
                Ok(()) => accepted += 1,
                Err(DispatchError::ShuttingDown) => break,
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert!(
        !shutdown.is_finished(),
        "shutdown cannot finish while handlers are still blocked"
    );
    assert_eq!(applied.load(Ordering::SeqCst), 0);

    gate.add_permits(accepted);
    bounded(shutdown).await.unwrap();

    assert_eq!(applied.load(Ordering::SeqCst), accepted);
    assert!(dead_letters.is_empty());
    assert!(matches!(
        bus.send(&Ship { order: 100 }).await,
        Err(DispatchError::ShuttingDown)
    ));
}

#[tokio::test]
async fn retries_still_waiting_at_the_drain_timeout_are_dead_lettered() {
    let (first_attempt_tx, mut first_attempt) = mpsc::unbounded_channel();
    let handlers = Handlers::builder()
        .command(command_fn(move |_: Ship, _| {
            let _ = first_attempt_tx.send(());
            async { Err(HandlerError::retryable("carrier offline")) }
        }))
        .build()
        .unwrap();
    let config = AsyncBusConfig {
        capacity: 10,
        concurrency: 1,
        // The retry would come long after the drain timeout.
        retry: RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_secs(3600),
            multiplier: 1.0,
            max_backoff: Duration::from_secs(3600),
        },
        drain_timeout: Duration::from_millis(50),
    };
    let (bus, dead_letters) = start(handlers, config);

    bus.send(&Ship { order: 1 }).await.unwrap();
    bounded(first_attempt.recv()).await.unwrap();
    bounded(bus.shutdown()).await;

    let letters = dead_letters.list();
    assert_eq!(letters.len(), 1, "kept, not dropped");
    assert_eq!(letters[0].attempts, 1);
    assert!(
        letters[0].error.contains("shut down before retry")
            && letters[0].error.contains("carrier offline"),
        "{}",
        letters[0].error
    );
    assert!(first_attempt.try_recv().is_err(), "never retried");
}

#[tokio::test]
async fn each_subscriber_of_an_event_is_retried_on_its_own() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let subscriber = |name: &'static str, failures: u32| {
        let seen = seen.clone();
        event_fn(move |event: Shipped, context: MessageContext| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push((name, event.order, context.attempt()));
                if context.attempt() <= failures {
                    return Err(HandlerError::retryable(format!("{name} not ready")));
                }
                Ok(())
            }
        })
    };
    let handlers = Handlers::builder()
        .subscribe("invoicing", subscriber("invoicing", 2))
        .subscribe("tracking", subscriber("tracking", 0))
        .build()
        .unwrap();
    let (bus, dead_letters) = start(handlers, config(10, fast_retry(5)));

    bus.publish(&Shipped { order: 8 }).await.unwrap();
    bounded(bus.shutdown()).await;

    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("invoicing", 8, 1),
            ("invoicing", 8, 2),
            ("invoicing", 8, 3),
            ("tracking", 8, 1),
        ],
        "the subscriber that succeeded is not called again for the other's retries"
    );
    assert!(dead_letters.is_empty());
}

#[tokio::test]
async fn a_subscriber_that_gives_up_is_dead_lettered_alone() {
    let tracked = Arc::new(AtomicUsize::new(0));
    let handlers = Handlers::builder()
        .subscribe(
            "invoicing",
            event_fn(|_: Shipped, _| async { Err(HandlerError::permanent("no billing address")) }),
        )
        .subscribe("tracking", {
            let tracked = tracked.clone();
            event_fn(move |_: Shipped, _| {
                tracked.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            })
        })
        .build()
        .unwrap();
    let (bus, dead_letters) = start(handlers, config(10, fast_retry(5)));

    bus.publish(&Shipped { order: 8 }).await.unwrap();
    bounded(bus.shutdown()).await;

    assert_eq!(tracked.load(Ordering::SeqCst), 1);
    let letters = dead_letters.list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].subscriber.as_deref(), Some("invoicing"));
    assert_eq!(letters[0].error, "no billing address");
}

fn quick_breaker() -> BreakerConfig {
    BreakerConfig {
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        jitter: 0.5,
    }
}

#[tokio::test]
async fn a_handler_failing_on_infrastructure_more_times_than_max_attempts_is_applied_and_not_dead_lettered(
) {
    let max_attempts = 3;
    let attempts = Attempts::default();
    let applied = Arc::new(AtomicUsize::new(0));
    let handlers = Handlers::builder()
        .command(command_fn({
            let (attempts, applied) = (attempts.clone(), applied.clone());
            move |_: Ship, context: MessageContext| {
                let (attempts, applied) = (attempts.clone(), applied.clone());
                async move {
                    attempts.record(&context);
                    if attempts.get().len() <= 4 * max_attempts as usize {
                        return Err(HandlerError::infrastructure("pool timed out"));
                    }
                    applied.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }
        }))
        .build()
        .unwrap();
    let dead_letters = InMemoryDeadLetters::default();
    let bus = AsyncBus::builder(handlers)
        .config(config(10, fast_retry(max_attempts)))
        .dead_letters(Arc::new(dead_letters.clone()))
        .breaker(CircuitBreaker::new(quick_breaker()))
        .start();

    bus.send(&Ship { order: 1 }).await.unwrap();
    bounded(bus.shutdown()).await;
    assert_eq!(applied.load(Ordering::SeqCst), 1, "applied once");
    assert!(dead_letters.is_empty(), "{:?}", dead_letters.list());
    assert_eq!(attempts.get(), vec![1; 4 * max_attempts as usize + 1]);
}

#[tokio::test]
async fn while_the_database_is_down_the_async_bus_pauses_and_says_why_then_applies_everything() {
    let database_down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let calls_while_down = Arc::new(AtomicUsize::new(0));
    let applied = Arc::new(Mutex::new(Vec::new()));
    let handlers = Handlers::builder()
        .command(command_fn({
            let (down, calls, applied) = (
                database_down.clone(),
                calls_while_down.clone(),
                applied.clone(),
            );
            move |ship: Ship, _: MessageContext| {
                let (down, calls, applied) = (down.clone(), calls.clone(), applied.clone());
                async move {
                    if down.load(Ordering::SeqCst) {
                        calls.fetch_add(1, Ordering::SeqCst);
                        return Err(HandlerError::infrastructure("connection refused"));
                    }
                    applied.lock().unwrap().push(ship.order);
                    Ok(())
                }
            }
        }))
        .build()
        .unwrap();
    let probe_down = database_down.clone();
    let breaker = CircuitBreaker::with_probe(quick_breaker(), move || {
        let down = probe_down.load(Ordering::SeqCst);
        async move {
            if down {
                Err("connection refused".to_owned())
            } else {
                Ok(())
            }
        }
    });
    let dead_letters = InMemoryDeadLetters::default();
    let bus = AsyncBus::builder(handlers)
        .config(config(100, fast_retry(2)))
        .dead_letters(Arc::new(dead_letters.clone()))
        .breaker(breaker)
        .start();

    for order in 1..=20 {
        bus.send(&Ship { order }).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let paused = loop {
        if let Some(paused) = bus.paused() {
            break paused;
        }
        assert!(tokio::time::Instant::now() < deadline, "never paused");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert!(paused.ends_with("connection refused"), "{paused}");
    // Probes keep failing for a while: no new message is started meanwhile,
    // only those already running when the breaker opened failed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(bus.paused().is_some(), "still paused");
    let calls = calls_while_down.load(Ordering::SeqCst);
    assert!(
        calls <= 4,
        "at most `concurrency` handlers ran while down: {calls}"
    );

    database_down.store(false, Ordering::SeqCst);
    bounded(bus.shutdown()).await;
    let mut applied = applied.lock().unwrap().clone();
    applied.sort_unstable();
    assert_eq!(
        applied,
        (1..=20).collect::<Vec<_>>(),
        "every command applied once"
    );
    assert!(dead_letters.is_empty(), "{:?}", dead_letters.list());
    assert_eq!(bus.paused(), None);
}
