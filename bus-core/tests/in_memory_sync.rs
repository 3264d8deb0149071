//! The in-memory sync bus runs handlers inline: the caller sees the outcome.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc, Mutex,
};

use bus_core::{
    command_fn, event_fn, Command, CommandBusExt, DispatchError, Event, EventBusExt, FailureKind,
    HandlerError, Handlers, InMemoryBus, InMemoryDeadLetters, Message,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deposit {
    amount: i64,
}
impl Message for Deposit {
    const NAME: &'static str = "test.Deposit";
}
impl Command for Deposit {}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Deposited {
    amount: i64,
}
impl Message for Deposited {
    const NAME: &'static str = "test.Deposited";
}
impl Event for Deposited {}

/// A handler that adds deposits to `balance` and refuses negative ones as
/// retryable (as if a prerequisite were missing).
fn deposit_handlers(balance: Arc<AtomicUsize>) -> bus_core::HandlersBuilder {
    Handlers::builder().command(command_fn(move |deposit: Deposit, _| {
        let balance = balance.clone();
        async move {
            if deposit.amount < 0 {
                return Err(HandlerError::retryable("account not open yet"));
            }
            balance.fetch_add(deposit.amount as usize, Ordering::SeqCst);
            Ok(())
        }
    }))
}

#[tokio::test]
async fn dispatch_returns_after_the_handler_applied_the_command() {
    let balance = Arc::new(AtomicUsize::new(0));
    let bus = InMemoryBus::new(deposit_handlers(balance.clone()).build().unwrap());

    bus.send(&Deposit { amount: 42 }).await.unwrap();

    assert_eq!(balance.load(Ordering::SeqCst), 42);
}

#[tokio::test]
async fn a_handler_failure_is_returned_to_the_caller_as_a_handler_error() {
    let balance = Arc::new(AtomicUsize::new(0));
    let dead_letters = InMemoryDeadLetters::default();
    let bus = InMemoryBus::with_dead_letters(
        deposit_handlers(balance.clone()).build().unwrap(),
        Arc::new(dead_letters.clone()),
    );

    let error = bus.send(&Deposit { amount: -1 }).await.unwrap_err();

    match error {
        DispatchError::Handler(handler_error) => {
            assert!(handler_error.is_retryable());
            assert_eq!(handler_error.to_string(), "account not open yet");
        }
        other => panic!("expected a handler error, got {other:?}"),
    }
    assert_eq!(balance.load(Ordering::SeqCst), 0);
    assert!(
        dead_letters.is_empty(),
        "the caller got the failure, so nothing is dead-lettered"
    );
}

#[tokio::test]
async fn publish_reaches_every_subscriber() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let subscriber = |name: &'static str| {
        let seen = seen.clone();
        event_fn(move |event: Deposited, _| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push((name, event.amount));
                Ok(())
            }
        })
    };
    let bus = InMemoryBus::new(
        Handlers::builder()
            .subscribe("ledger", subscriber("ledger"))
            .subscribe("mailer", subscriber("mailer"))
            .build()
            .unwrap(),
    );

    bus.publish(&Deposited { amount: 5 }).await.unwrap();

    let mut seen = seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, [("ledger", 5), ("mailer", 5)]);
}

#[tokio::test]
async fn a_failing_subscriber_is_dead_lettered_and_the_others_still_run() {
    let ledger_runs = Arc::new(AtomicUsize::new(0));
    let dead_letters = InMemoryDeadLetters::default();
    let handlers = Handlers::builder()
        // Registered first, so a failure that stopped the loop would starve "ledger".
        .subscribe(
            "mailer",
            event_fn(|_: Deposited, _| async { Err(HandlerError::permanent("smtp refused")) }),
        )
        .subscribe("ledger", {
            let runs = ledger_runs.clone();
            event_fn(move |_: Deposited, _| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
        })
        .build()
        .unwrap();
    let bus = InMemoryBus::with_dead_letters(handlers, Arc::new(dead_letters.clone()));

    bus.publish(&Deposited { amount: 5 })
        .await
        .expect("a subscriber failure is not the publisher's failure");

    assert_eq!(ledger_runs.load(Ordering::SeqCst), 1);
    let letters = dead_letters.list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].subscriber.as_deref(), Some("mailer"));
    assert_eq!(letters[0].envelope.message_type, "test.Deposited");
    assert_eq!(letters[0].error, "smtp refused");
    assert_eq!(letters[0].attempts, 1);
}

#[tokio::test]
async fn the_command_success_hook_fires_only_when_the_handler_succeeds() {
    let hooked = Arc::new(Mutex::new(Vec::new()));
    let handlers = deposit_handlers(Arc::new(AtomicUsize::new(0)))
        .subscribe("ledger", event_fn(|_: Deposited, _| async { Ok(()) }))
        .on_command_success({
            let hooked = hooked.clone();
            move |envelope| {
                hooked
                    .lock()
                    .unwrap()
                    .push(envelope.decode::<Deposit>().unwrap().amount)
            }
        })
        .build()
        .unwrap();
    let bus = InMemoryBus::new(handlers);

    bus.send(&Deposit { amount: 3 }).await.unwrap();
    bus.send(&Deposit { amount: -1 }).await.unwrap_err();
    bus.publish(&Deposited { amount: 3 }).await.unwrap();

    assert_eq!(
        *hooked.lock().unwrap(),
        [3],
        "once for the successful command; never for the failed one nor for subscribers"
    );
}

#[tokio::test]
async fn a_panicking_command_handler_gives_the_caller_a_retryable_panic_error() {
    let handlers = Handlers::builder()
        .command(command_fn(|_: Deposit, _| async {
            panic!("ledger corrupted");
        }))
        .build()
        .unwrap();
    let dead_letters = InMemoryDeadLetters::default();
    let bus = InMemoryBus::with_dead_letters(handlers, Arc::new(dead_letters.clone()));

    let error = bus.send(&Deposit { amount: 1 }).await.unwrap_err();

    let DispatchError::Handler(error) = error else {
        panic!("expected a handler error, got {error:?}");
    };
    assert!(
        matches!(&error, HandlerError::Panicked { message } if message == "ledger corrupted"),
        "{error:?}"
    );
    assert_eq!(
        error.kind(),
        FailureKind::Retryable,
        "the same class on every bus"
    );
    assert_eq!(error.to_string(), "handler panicked: ledger corrupted");
    assert!(
        dead_letters.is_empty(),
        "the caller got it; nothing to keep"
    );
}

#[tokio::test]
async fn a_panicking_subscriber_is_dead_lettered_with_the_panic_and_the_others_still_run() {
    let ledger_runs = Arc::new(AtomicUsize::new(0));
    let dead_letters = InMemoryDeadLetters::default();
    let handlers = Handlers::builder()
        .subscribe(
            "mailer",
            event_fn(|_: Deposited, _| async { panic!("template missing") }),
        )
        .subscribe("ledger", {
            let runs = ledger_runs.clone();
            event_fn(move |_: Deposited, _| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
        })
        .build()
        .unwrap();
    let bus = InMemoryBus::with_dead_letters(handlers, Arc::new(dead_letters.clone()));

    bus.publish(&Deposited { amount: 5 }).await.unwrap();

    assert_eq!(ledger_runs.load(Ordering::SeqCst), 1);
    let letters = dead_letters.list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].subscriber.as_deref(), Some("mailer"));
    assert_eq!(letters[0].error, "handler panicked: template missing");
}
