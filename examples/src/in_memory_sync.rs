//! The in-memory sync bus: `dispatch` runs the handler before it returns, so
//! the caller sees the outcome, errors included, at once.
//!
//! Run with `cargo run -p examples --bin in-memory-sync`.

use std::sync::{Arc, Mutex};

use bus_core::{
    event_fn, Command, CommandBusExt, CommandHandler, Event, EventBus, HandlerError, Handlers,
    InMemoryBus, Message, MessageContext,
};
use serde::{Deserialize, Serialize};

/// A command asks for a change; exactly one handler applies it.
#[derive(Debug, Serialize, Deserialize)]
struct RegisterBook {
    isbn: String,
    title: String,
}

// Messages are identified by this name, not by the Rust path, so renaming
// the type never breaks a queue or a stored message.
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

/// Applies `RegisterBook`. It only knows the `EventBus` trait, so the same
/// handler runs unchanged on the async bus or on RabbitMQ.
struct RegisterBookHandler {
    shelf: Arc<Mutex<Vec<String>>>,
    events: Arc<dyn EventBus>,
}

impl CommandHandler<RegisterBook> for RegisterBookHandler {
    async fn handle(
        &self,
        book: RegisterBook,
        context: MessageContext,
    ) -> Result<(), HandlerError> {
        {
            let mut shelf = self.shelf.lock().unwrap();
            if shelf.contains(&book.isbn) {
                // Permanent: retrying cannot make a duplicate acceptable.
                return Err(HandlerError::permanent(format!(
                    "{} is already registered",
                    book.isbn
                )));
            }
            shelf.push(book.isbn.clone());
        }
        // Built from the context, the event carries the command's
        // correlation id and trace, so logs can link the two.
        let event = context
            .event_envelope(&BookRegistered {
                isbn: book.isbn,
                title: book.title,
            })
            .map_err(|error| HandlerError::permanent(error.to_string()))?;
        self.events
            .publish_envelope(event)
            .await
            .map_err(|error| HandlerError::retryable(error.to_string()))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Subscribers live on their own bus, built first, so the command handler
    // can hold it: no cycle between a bus and its own handlers.
    let events = InMemoryBus::new(
        Handlers::builder()
            .subscribe(
                "catalogue",
                event_fn(|book: BookRegistered, _| async move {
                    println!("[catalogue] listed {:?} ({})", book.title, book.isbn);
                    Ok(())
                }),
            )
            .subscribe(
                "notifications",
                event_fn(|book: BookRegistered, context| async move {
                    let correlation = context.envelope().correlation_id().unwrap_or("-");
                    println!(
                        "[notifications] new book {:?} (correlation {correlation})",
                        book.title
                    );
                    Ok(())
                }),
            )
            .build()?,
    );
    let shelf = Arc::new(Mutex::new(Vec::new()));
    let commands = InMemoryBus::new(
        Handlers::builder()
            .command(RegisterBookHandler {
                shelf: shelf.clone(),
                events: Arc::new(events),
            })
            .build()?,
    );

    let book = RegisterBook {
        isbn: "978-0-13-110362-7".into(),
        title: "The C Programming Language".into(),
    };
    commands.send(&book).await?;
    // No waiting: by now the handler and both subscribers have run.
    println!("[main] shelf after dispatch: {:?}", shelf.lock().unwrap());

    // A failing handler is the caller's error to answer (here, a 422 in an API).
    match commands.send(&book).await {
        Ok(()) => println!("[main] registered twice?"),
        Err(error) => println!("[main] second registration refused: {error}"),
    }
    Ok(())
}
