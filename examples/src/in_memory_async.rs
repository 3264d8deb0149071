//! The in-memory async bus: `dispatch` returns once the command is queued;
//! tokio workers run the handlers, retry failures with backoff and keep what
//! never succeeds as a dead letter. `shutdown()` drains before exit.
//!
//! Run with `cargo run -p examples --bin in-memory-async`
//! (`RUST_LOG=warn` hides the bus's own info logs).

use std::{
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bus_core::{
    event_fn, AsyncBus, AsyncBusConfig, Command, CommandBusExt, CommandHandler, Event, EventBus,
    HandlerError, Handlers, InMemoryDeadLetters, Message, MessageContext, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

/// A command asks for a change; exactly one handler applies it.
#[derive(Debug, Serialize, Deserialize)]
struct RegisterBook {
    isbn: String,
    title: String,
}

impl Message for RegisterBook {
    const NAME: &'static str = "library.RegisterBook";
}
impl Command for RegisterBook {}

/// An event states a fact; any number of subscribers react to it.
#[derive(Debug, Serialize, Deserialize)]
struct BookRegistered {
    isbn: String,
    title: String,
}

impl Message for BookRegistered {
    const NAME: &'static str = "library.BookRegistered";
}
impl Event for BookRegistered {}

/// Applies `RegisterBook`, pretending the database is busy the first time.
struct RegisterBookHandler {
    shelf: Arc<Mutex<Vec<String>>>,
    events: Arc<dyn EventBus>,
    busy_answers_left: AtomicU32,
}

impl CommandHandler<RegisterBook> for RegisterBookHandler {
    async fn handle(
        &self,
        book: RegisterBook,
        context: MessageContext,
    ) -> Result<(), HandlerError> {
        println!(
            "[handler] {:?}, attempt {} of {}",
            book.title,
            context.attempt(),
            context.max_attempts()
        );
        // Retryable: the bus tries again after the policy's backoff. Failing
        // before any change keeps the handler safe to run more than once
        // (delivery is at-least-once).
        if self
            .busy_answers_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(HandlerError::retryable("database busy"));
        }
        self.shelf.lock().unwrap().push(book.isbn.clone());
        let event = context
            .event_envelope(&BookRegistered {
                isbn: book.isbn,
                title: book.title,
            })
            .map_err(|error| HandlerError::permanent(error.to_string()))?;
        // A full event bus is worth a retry too: it says "not now", not "never".
        self.events
            .publish_envelope(event)
            .await
            .map_err(|error| HandlerError::retryable(error.to_string()))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The bus logs retries (warn) and dead letters (error) through `tracing`.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();

    let config = AsyncBusConfig {
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(1),
        },
        drain_timeout: Duration::from_secs(5),
        ..AsyncBusConfig::default()
    };
    let dead_letters = InMemoryDeadLetters::default();

    // Subscribers get their own bus, built first so the command handler can
    // hold it. Each subscriber is retried on its own.
    let events = AsyncBus::start_with_dead_letters(
        Handlers::builder()
            .subscribe(
                "catalogue",
                event_fn(|book: BookRegistered, _| async move {
                    println!("[catalogue] listed {:?}", book.title);
                    Ok(())
                }),
            )
            .subscribe(
                "notifications",
                event_fn(|book: BookRegistered, _| async move {
                    println!("[notifications] new book {:?}", book.title);
                    Ok(())
                }),
            )
            .build()?,
        config.clone(),
        Arc::new(dead_letters.clone()),
    );
    let shelf = Arc::new(Mutex::new(Vec::new()));
    let commands = AsyncBus::start_with_dead_letters(
        Handlers::builder()
            .command(RegisterBookHandler {
                shelf: shelf.clone(),
                events: Arc::new(events.clone()),
                busy_answers_left: AtomicU32::new(1),
            })
            .build()?,
        config,
        Arc::new(dead_letters.clone()),
    );

    commands
        .send(&RegisterBook {
            isbn: "978-0-262-03384-8".into(),
            title: "Introduction to Algorithms".into(),
        })
        .await?;
    // `Ok` means "queued": the handler has most likely not run yet.
    println!(
        "[main] dispatched; shelf so far: {:?}",
        shelf.lock().unwrap()
    );

    // Commands first: their handlers may still publish events, which a
    // closed event bus would refuse.
    commands.shutdown().await;
    events.shutdown().await;

    println!(
        "[main] drained; shelf: {:?}, dead letters: {}",
        shelf.lock().unwrap(),
        dead_letters.len()
    );
    Ok(())
}
