//! Helpers shared by the integration tests: a real broker, one namespace per
//! test, cleanup, polling.
#![allow(dead_code)]

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use bus_core::{Command, Event, Message, RetryPolicy};
use bus_rabbitmq::{
    lapin::{
        message::BasicGetMessage,
        options::{
            BasicGetOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
        },
        types::FieldTable,
        Channel, Connection, ConnectionProperties,
    },
    RabbitConfig, RabbitError, RabbitWorker, Topology,
};
use serde::{Deserialize, Serialize};
use tokio::{sync::oneshot, task::JoinHandle};

/// The broker every test talks to.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Writes the logs to the test's output when `TEST_LOG` is set: `TEST_LOG=1`
/// for `info` (or what `RUST_LOG` says), `TEST_LOG=<filter>` (e.g. `debug`,
/// `bus_rabbitmq=trace`) to choose.
pub fn init_logs() {
    let Some(value) = std::env::var("TEST_LOG").ok().filter(|v| !v.is_empty()) else {
        return;
    };
    let filter = match value.as_str() {
        "1" | "true" | "yes" | "on" => std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        filter => filter.to_owned(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|error| panic!("TEST_LOG={value} is not a log filter: {error}"));
    // Every test calls this; the first one installs the subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A configuration in a namespace of its own, with fast retries.
pub fn config() -> RabbitConfig {
    init_logs();
    let namespace = format!("test-{}", uuid::Uuid::new_v4());
    RabbitConfig {
        amqp_url: amqp_url(),
        connection_name: namespace.clone(),
        namespace,
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(50),
            multiplier: 2.0,
            max_backoff: Duration::from_millis(200),
        },
        confirm_timeout: Duration::from_secs(5),
        reconnect_min_backoff: Duration::from_millis(100),
        reconnect_max_backoff: Duration::from_secs(1),
        ..RabbitConfig::default()
    }
}

/// A plain channel for the test's own checks.
pub async fn channel() -> (Connection, Channel) {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .expect("the test broker must run on AMQP_URL");
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

/// Deletes every queue and exchange of `topology`.
pub async fn cleanup(topology: &Topology) {
    let (connection, channel) = channel().await;
    for queue in topology.queues() {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("delete queue {queue}: {e}"));
    }
    for exchange in topology.exchanges() {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("delete exchange {exchange}: {e}"));
    }
    let _ = connection.close(200, "OK".into()).await;
}

/// How many ready messages `queue` holds.
pub async fn message_count(channel: &Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("passive declare {queue}: {e}"))
        .message_count()
}

/// The queues of `topology` that still hold ready messages, with how many.
/// Once its worker has stopped, an empty answer means no message of the
/// test can be handled again.
pub async fn leftover_messages(channel: &Channel, topology: &Topology) -> Vec<(String, u32)> {
    let mut left = Vec::new();
    for queue in topology.queues() {
        let count = message_count(channel, &queue).await;
        if count > 0 {
            left.push((queue, count));
        }
    }
    left
}

/// Takes one message of `queue` (auto-ack), if any.
pub async fn get(channel: &Channel, queue: &str) -> Option<BasicGetMessage> {
    channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
}

/// Polls `queue` until it yields a message, for at most `within`.
pub async fn wait_for_message(channel: &Channel, queue: &str, within: Duration) -> BasicGetMessage {
    eventually(within, || async { get(channel, queue).await })
        .await
        .unwrap_or_else(|| panic!("no message in {queue} after {within:?}"))
}

/// Polls `probe` every 20 ms until it returns `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A string header of a fetched message.
pub fn header(message: &BasicGetMessage, name: &str) -> Option<String> {
    let table = message.delivery.properties.headers().as_ref()?;
    bus_rabbitmq::wire::header_string(table, name)
}

/// An integer header of a fetched message.
pub fn header_u32(message: &BasicGetMessage, name: &str) -> Option<u32> {
    let table = message.delivery.properties.headers().as_ref()?;
    bus_rabbitmq::wire::header_u32(table, name)
}

/// A worker running in the background until [`RunningWorker::stop`].
pub struct RunningWorker {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), RabbitError>>,
}

impl RunningWorker {
    pub fn start(worker: RabbitWorker) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        }));
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Requests shutdown and waits (10 s at most) for `run` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the worker stops within 10 s")
            .expect("the worker task does not panic")
            .expect("the worker returns Ok");
    }
}

/// A shared list to record what handlers saw.
#[derive(Clone, Default)]
pub struct Record<T>(Arc<Mutex<Vec<T>>>);

impl<T: Clone> Record<T> {
    pub fn push(&self, value: T) {
        self.0.lock().unwrap().push(value);
    }

    pub fn list(&self) -> Vec<T> {
        self.0.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// The test command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoThing {
    pub n: u32,
}
impl Message for DoThing {
    const NAME: &'static str = "test.DoThing";
}
impl Command for DoThing {}

/// Handlers where `DoThing` records its `n` in `record` and succeeds.
pub fn recording_handlers(record: &Record<u32>) -> bus_core::Handlers {
    let record = record.clone();
    bus_core::Handlers::builder()
        .command::<DoThing, _>(bus_core::command_fn(move |command: DoThing, _| {
            let record = record.clone();
            async move {
                record.push(command.n);
                Ok::<_, bus_core::HandlerError>(())
            }
        }))
        .build()
        .unwrap()
}

/// The test event, with subscribers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ThingDone {
    pub n: u32,
}
impl Message for ThingDone {
    const NAME: &'static str = "test.ThingDone";
}
impl Event for ThingDone {}

/// An event nobody subscribes to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NobodyCares {
    pub n: u32,
}
impl Message for NobodyCares {
    const NAME: &'static str = "test.NobodyCares";
}
impl Event for NobodyCares {}
