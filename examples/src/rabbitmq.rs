//! bus-core over RabbitMQ: a command handler and an event subscriber in a
//! worker, a publisher that sends the command, and the handler raising an
//! event through the same publisher. Every publish is confirmed by the
//! broker before `send` returns.
//!
//! Run with a broker on `AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`):
//! `cargo run -p examples --bin rabbitmq`. The program uses a namespace of
//! its own, deletes its queues and exchanges at the end and exits.

use std::time::Duration;

use bus_core::{
    event_fn, Command, CommandBusExt, CommandHandler, Event, EventBus, HandlerError, Handlers,
    Message, MessageContext,
};
use bus_rabbitmq::{
    lapin::{
        options::{ExchangeDeleteOptions, QueueDeleteOptions},
        Connection, ConnectionProperties,
    },
    RabbitConfig, RabbitPublisher, RabbitWorker, Topology,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Serialize, Deserialize)]
struct RegisterBook {
    isbn: String,
    title: String,
}
impl Message for RegisterBook {
    const NAME: &'static str = "library.RegisterBook";
}
impl Command for RegisterBook {}

#[derive(Debug, Serialize, Deserialize)]
struct BookRegistered {
    isbn: String,
    title: String,
}
impl Message for BookRegistered {
    const NAME: &'static str = "library.BookRegistered";
}
impl Event for BookRegistered {}

/// Applies `RegisterBook`, then publishes `BookRegistered` (caused by it).
struct RegisterBookHandler {
    events: RabbitPublisher,
}

impl CommandHandler<RegisterBook> for RegisterBookHandler {
    async fn handle(
        &self,
        command: RegisterBook,
        context: MessageContext,
    ) -> Result<(), HandlerError> {
        tracing::info!(isbn = %command.isbn, attempt = context.attempt(), "registering book");
        let event = context
            .event_envelope(&BookRegistered {
                isbn: command.isbn,
                title: command.title,
            })
            .map_err(|error| HandlerError::permanent(error.to_string()))?;
        // Unavailable broker: retry the command later rather than lose the event.
        self.events
            .publish_envelope(event)
            .await
            .map_err(|error| HandlerError::retryable(error.to_string()))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let config = RabbitConfig {
        amqp_url: std::env::var("AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()),
        namespace: format!("example-{}", std::process::id()),
        connection_name: "rabbitmq-example".to_owned(),
        ..RabbitConfig::default()
    };

    // The publisher must exist before the handlers (the command handler
    // publishes events); it declares the names it knows by hand.
    let publisher_topology = config
        .empty_topology()
        .with_command(RegisterBook::NAME)
        .with_subscription(BookRegistered::NAME, "catalogue");
    let publisher = RabbitPublisher::connect(&config, publisher_topology).await?;

    let (seen_tx, mut seen) = mpsc::unbounded_channel::<String>();
    let handlers = Handlers::builder()
        .command::<RegisterBook, _>(RegisterBookHandler {
            events: publisher.clone(),
        })
        .subscribe::<BookRegistered, _>(
            "catalogue",
            event_fn(move |event: BookRegistered, _| {
                let seen_tx = seen_tx.clone();
                async move {
                    tracing::info!(isbn = %event.isbn, title = %event.title, "catalogue updated");
                    let _ = seen_tx.send(event.isbn);
                    Ok::<_, HandlerError>(())
                }
            }),
        )
        .build()?;

    let worker = RabbitWorker::new(&handlers, config.clone())?;
    let topology = worker.topology().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async move {
        let _ = stopped.await;
    }));

    publisher
        .send(&RegisterBook {
            isbn: "978-0-13-468599-1".to_owned(),
            title: "The Rust Programming Language".to_owned(),
        })
        .await?;
    tracing::info!("command confirmed by the broker");

    let isbn = tokio::time::timeout(Duration::from_secs(10), seen.recv()).await?;
    tracing::info!(?isbn, "the subscriber saw the event");

    let _ = stop.send(());
    running.await??;
    publisher.close();
    clean_up(&config.amqp_url, &topology).await?;
    tracing::info!("done");
    Ok(())
}

/// Deletes the example's queues and exchanges.
async fn clean_up(url: &str, topology: &Topology) -> anyhow::Result<()> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    for queue in topology.queues() {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    for exchange in topology.exchanges() {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    connection.close(200, "OK".into()).await?;
    Ok(())
}
