//! Middleware registered once wraps every handler on every bus, in
//! registration order, inside the panic catching.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bus_core::{
    command_fn, event_fn, AsyncBus, AsyncBusConfig, BoxFuture, Command, CommandBusExt,
    DispatchError, Event, EventBusExt, HandlerError, Handlers, InMemoryBus, InMemoryDeadLetters,
    Message, MessageContext, Middleware, Next, RetryPolicy,
};
use serde::{Deserialize, Serialize};

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

type Log = Arc<Mutex<Vec<String>>>;

/// Writes `name>` before and `<name ok|err` after the rest of the chain.
struct Trace {
    name: &'static str,
    log: Log,
}

impl Middleware for Trace {
    fn handle<'a>(
        &'a self,
        context: MessageContext,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            self.log.lock().unwrap().push(format!(
                "{}> {} #{}",
                self.name,
                context.envelope().message_type,
                context.attempt()
            ));
            let result = next.run(context).await;
            let outcome = if result.is_ok() { "ok" } else { "err" };
            self.log
                .lock()
                .unwrap()
                .push(format!("<{} {outcome}", self.name));
            result
        })
    }
}

/// Refuses every message without calling the handler, as a circuit
/// breaker would while open.
struct Open;

impl Middleware for Open {
    fn handle<'a>(
        &'a self,
        _: MessageContext,
        _: Next<'a>,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async { Err(HandlerError::permanent("circuit open")) })
    }
}

fn log_of(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

#[tokio::test]
async fn middleware_runs_in_registration_order_around_commands_and_subscribers() {
    let log = Log::default();
    let handlers = Handlers::builder()
        .middleware(Trace {
            name: "outer",
            log: log.clone(),
        })
        .middleware(Trace {
            name: "inner",
            log: log.clone(),
        })
        .command({
            let log = log.clone();
            command_fn(move |_: Ship, _| {
                let log = log.clone();
                async move {
                    log.lock().unwrap().push("handler".into());
                    Ok(())
                }
            })
        })
        .subscribe(
            "mailer",
            event_fn(|_: Shipped, _| async { Err(HandlerError::permanent("smtp refused")) }),
        )
        .build()
        .unwrap();
    let bus = InMemoryBus::new(handlers);

    bus.send(&Ship { order: 1 }).await.unwrap();
    bus.publish(&Shipped { order: 1 }).await.unwrap();

    assert_eq!(
        log_of(&log),
        [
            "outer> test.Ship #1",
            "inner> test.Ship #1",
            "handler",
            "<inner ok",
            "<outer ok",
            "outer> test.Shipped #1",
            "inner> test.Shipped #1",
            "<inner err",
            "<outer err",
        ]
    );
}

#[tokio::test]
async fn middleware_sees_every_attempt_on_the_async_bus_and_can_refuse_a_message() {
    let log = Log::default();
    let handlers = Handlers::builder()
        .middleware(Trace {
            name: "trace",
            log: log.clone(),
        })
        .command(command_fn(|_: Ship, _| async {
            Err(HandlerError::retryable("carrier offline"))
        }))
        .build()
        .unwrap();
    let dead_letters = InMemoryDeadLetters::default();
    let bus = AsyncBus::start_with_dead_letters(
        handlers,
        AsyncBusConfig {
            retry: RetryPolicy {
                max_attempts: 2,
                initial_backoff: Duration::from_millis(1),
                multiplier: 1.0,
                max_backoff: Duration::from_millis(1),
            },
            ..AsyncBusConfig::default()
        },
        Arc::new(dead_letters.clone()),
    );

    bus.send(&Ship { order: 1 }).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), bus.shutdown())
        .await
        .expect("the bus drains");

    assert_eq!(
        log_of(&log),
        [
            "trace> test.Ship #1",
            "<trace err",
            "trace> test.Ship #2",
            "<trace err"
        ]
    );
    assert_eq!(dead_letters.list()[0].error, "carrier offline");

    let refused = Handlers::builder()
        .middleware(Open)
        .command(command_fn(|_: Ship, _| async {
            panic!("the handler must not run while the circuit is open")
        }))
        .build()
        .unwrap();
    let error = InMemoryBus::new(refused)
        .send(&Ship { order: 2 })
        .await
        .unwrap_err();
    assert!(
        matches!(&error, DispatchError::Handler(HandlerError::Permanent { message, .. }) if message == "circuit open"),
        "{error:?}"
    );
}
