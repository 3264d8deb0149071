//! Starts the application on a fresh database, on port 0, and talks to it
//! over HTTP like a mobile client.
//!
//! `TEST_LOG=1` (the binary's default filter, or `RUST_LOG`) or
//! `TEST_LOG=<filter>` (e.g. `debug`, `marketplace=debug,bus_core=trace`)
//! writes the application's logs to each test's output; without it they are
//! kept only for [`TestApp::logged`].

use std::{
    collections::BTreeMap,
    future::Future,
    path::PathBuf,
    sync::{LazyLock, Mutex},
    time::Duration,
};

use bus_core::{InMemoryDeadLetters, TraceContext};
use bus_rabbitmq::{
    lapin::{
        options::{
            BasicGetOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
        },
        types::{AMQPValue, FieldTable},
        Connection, ConnectionProperties,
    },
    Naming, Topology,
};
use marketplace::{
    config::{BusKind, ServeConfig, WorkerConfig},
    startup::{App, Worker},
    store::{Database, SqliteStore},
    telemetry,
};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::{sync::oneshot, task::JoinHandle};
use tracing::{field::Field, span, Event, Level, Subscriber};
use tracing_subscriber::{
    filter::Targets,
    fmt,
    layer::{Context, SubscriberExt},
    registry::LookupSpan,
    util::SubscriberInitExt,
    EnvFilter, Layer,
};
use uuid::Uuid;

/// How long `eventually` waits for an asynchronous effect.
const PATIENCE: Duration = Duration::from_secs(15);

/// The database under test: a PostgreSQL database of its own, or an SQLite
/// file of its own.
pub enum TestDb {
    Postgres(PgPool),
    Sqlite { store: SqliteStore, path: PathBuf },
}

impl TestDb {
    /// A fresh SQLite file in the temporary directory, migrated.
    pub async fn sqlite() -> Self {
        init_logging();
        let path =
            std::env::temp_dir().join(format!("marketplace-test-{}.db", Uuid::new_v4().simple()));
        let store = SqliteStore::open(&format!("sqlite://{}", path.display()), 4)
            .await
            .expect("SQLite test database");
        TestDb::Sqlite { store, path }
    }

    pub fn database(&self) -> Database {
        match self {
            TestDb::Postgres(pool) => Database::Postgres(pool.clone()),
            TestDb::Sqlite { store, .. } => Database::Sqlite(store.clone()),
        }
    }

    /// Runs a query answering one integer (a count) on either database.
    pub async fn try_count(&self, sql: &str) -> Option<i64> {
        match self {
            TestDb::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.ok(),
            TestDb::Sqlite { store, .. } => {
                sqlx::query_scalar(sql).fetch_one(store.reader()).await.ok()
            }
        }
    }

    async fn remove(self) {
        if let TestDb::Sqlite { store, path } = self {
            store.close().await;
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub db: Option<TestDb>,
    pub dead_letters: InMemoryDeadLetters,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    /// With `--bus rabbitmq`: the worker process's in-process twin.
    worker: Option<RunningWorker>,
    /// The RabbitMQ namespace of this test.
    pub namespace: String,
    /// The bus the app runs on.
    pub bus: BusKind,
}

struct RunningWorker {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
    topology: Topology,
    config: WorkerConfig,
    /// The `host:port` of its health probes.
    health: String,
}

impl RunningWorker {
    /// Builds and starts a worker on `pool`.
    async fn start(config: WorkerConfig, pool: PgPool) -> Self {
        let worker = Worker::build_with_pool(&config, pool)
            .await
            .expect("worker builds");
        let topology = worker.topology();
        let health = worker.health_addr().expect("health bound").to_string();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(worker.run(async {
            let _ = stopped.await;
        }));
        RunningWorker {
            stop,
            task,
            topology,
            config,
            health,
        }
    }

    /// Stops it gracefully and waits until it has drained.
    async fn stop(self) -> (Topology, WorkerConfig) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("worker task")
            .expect("clean worker shutdown");
        (self.topology, self.config)
    }
}

/// Flags of `worker` that `serve` does not take.
const WORKER_ONLY_FLAGS: &[&str] = &["--admin-token", "--pause-poll-interval"];

/// Flags of `serve` that `worker` does not take (its twin gets the others).
const API_ONLY_FLAGS: &[&str] = &[
    "--queue-capacity",
    "--drain-timeout",
    "--rate-limit-per-second",
    "--rate-limit-burst",
    "--max-in-flight",
    "--trusted-proxies",
    "--request-timeout",
    "--read-statement-timeout",
];

/// Starts the API on `bus` with fast retries (tests must not wait minutes).
pub async fn spawn_app(pool: PgPool, bus: BusKind) -> TestApp {
    spawn_app_with(pool, bus, &[]).await
}

/// Starts the API on `bus` and a fresh SQLite file.
pub async fn spawn_app_on_sqlite(bus: BusKind) -> TestApp {
    spawn(TestDb::sqlite().await, bus, &[]).await
}

/// Starts the API on `bus` with extra `serve` flags.
pub async fn spawn_app_with(pool: PgPool, bus: BusKind, flags: &[&str]) -> TestApp {
    spawn(TestDb::Postgres(pool), bus, flags).await
}

/// Starts the API on `db` and `bus` with extra `serve` flags.
pub async fn spawn(db: TestDb, bus: BusKind, flags: &[&str]) -> TestApp {
    init_logging();
    let bus_name = match bus {
        BusKind::InMemory => "in-memory",
        BusKind::InMemoryAsync => "in-memory-async",
        BusKind::Rabbitmq => "rabbitmq",
        BusKind::Durable => "durable",
    };
    // Each test has its own RabbitMQ namespace, deleted at the end.
    let namespace = format!("test-{}", Uuid::new_v4().simple());
    let retries = [
        ("--retry-max-attempts", "10"),
        ("--retry-initial-backoff", "20ms"),
        ("--retry-max-backoff", "500ms"),
    ];
    let with_defaults = |defaults: &[(&'static str, &str)]| -> Vec<String> {
        let mut args: Vec<String> = defaults
            .iter()
            .chain(&retries)
            .chain(&[("--namespace", namespace.as_str())])
            .filter(|(flag, _)| !flags.contains(flag))
            .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
            .collect();
        args.extend(flags.iter().map(|f| f.to_string()));
        args
    };
    let worker = if bus == BusKind::Rabbitmq {
        let worker_flags = with_defaults(&[("--health-listen", "127.0.0.1:0")]);
        let worker_flags: Vec<String> = worker_flags
            .chunks(2)
            .filter(|pair| !API_ONLY_FLAGS.contains(&pair[0].as_str()))
            // Workers verify no token.
            .filter(|pair| !pair[0].starts_with("--auth-"))
            .flatten()
            .cloned()
            .collect();
        let config = WorkerConfig::from_args(worker_flags).expect("valid worker flags");
        let TestDb::Postgres(pool) = &db else {
            panic!("the RabbitMQ bus runs on PostgreSQL only");
        };
        Some(RunningWorker::start(config, pool.clone()).await)
    } else {
        None
    };
    // Tests send bursts from one address: no per-client rate limit unless
    // a test asks for one.
    let args: Vec<String> = with_defaults(&[
        ("--bus", bus_name),
        ("--listen", "127.0.0.1:0"),
        ("--rate-limit-per-second", "0"),
    ])
    .chunks(2)
    .filter(|pair| !WORKER_ONLY_FLAGS.contains(&pair[0].as_str()))
    .flatten()
    .cloned()
    .collect();
    let config = ServeConfig::from_args(args).expect("valid test flags");
    let app = App::build_with_database(&config, db.database())
        .await
        .expect("app builds");
    let address = format!("http://{}", app.local_addr().expect("bound"));
    let dead_letters = app.dead_letters();
    let (stop, stopped) = oneshot::channel();
    let server = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        client: reqwest::Client::new(),
        db: Some(db),
        dead_letters,
        stop: Some(stop),
        server: Some(server),
        worker,
        namespace,
        bus,
    }
}

impl TestApp {
    /// With `--bus rabbitmq`: the `host:port` of the worker's health probes.
    pub fn worker_health_address(&self) -> Option<&str> {
        self.worker.as_ref().map(|worker| worker.health.as_str())
    }

    /// A query answering one integer (a count), on whichever database.
    pub async fn count(&self, sql: &str) -> i64 {
        self.try_count(sql)
            .await
            .unwrap_or_else(|| panic!("query failed: {sql}"))
    }

    /// [`TestApp::count`], `None` if the query failed.
    pub async fn try_count(&self, sql: &str) -> Option<i64> {
        self.db.as_ref()?.try_count(sql).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Response {
        self.client
            .put(format!("{}{path}", self.address))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(format!("{}{path}", self.address))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent")
    }

    /// `GET path`, expecting `200` and JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.expect("JSON body")
    }

    pub async fn put_user(&self, id: Uuid, name: &str) -> Response {
        self.put("/user", &json!({ "id": id, "name": name })).await
    }

    pub async fn put_book(&self, id: Uuid, title: &str) -> Response {
        self.put(
            "/book",
            &json!({ "id": id, "title": title, "author": "Frank Herbert" }),
        )
        .await
    }

    pub async fn post_offer(
        &self,
        id: Uuid,
        book: Uuid,
        seller: Uuid,
        price: f64,
        stock: i64,
    ) -> Response {
        self.post(
            "/offer",
            &json!({ "id": id, "bookId": book, "sellerId": seller, "price": price, "stock": stock }),
        )
        .await
    }

    pub async fn post_order(&self, id: Uuid, user: Uuid, items: &[(Uuid, i64)]) -> Response {
        let items: Vec<Value> = items
            .iter()
            .map(|(offer, quantity)| json!({ "offerId": offer, "quantity": quantity }))
            .collect();
        self.post(
            "/order",
            &json!({ "id": id, "userId": user, "items": items }),
        )
        .await
    }

    /// A user, a book and an offer of `stock` copies at `price`, all applied.
    pub async fn seed_offer(&self, price: f64, stock: i64) -> Seeded {
        let seeded = Seeded {
            user: Uuid::new_v4(),
            book: Uuid::new_v4(),
            offer: Uuid::new_v4(),
        };
        assert_eq!(self.put_user(seeded.user, "Seller").await.status(), 200);
        assert_eq!(self.put_book(seeded.book, "Dune").await.status(), 200);
        self.eventually(|| async {
            (self.get(&format!("/books/{}", seeded.book)).await.status() == 200).then_some(())
        })
        .await;
        self.eventually(|| async {
            (self.get(&format!("/users/{}", seeded.user)).await.status() == 200).then_some(())
        })
        .await;
        assert_eq!(
            self.post_offer(seeded.offer, seeded.book, seeded.user, price, stock)
                .await
                .status(),
            200
        );
        self.await_listed(seeded.book, seeded.offer).await;
        seeded
    }

    /// Waits until `book` lists `offer` as its offer (a book not registered
    /// yet counts as not listing it); returns the book as read.
    pub async fn await_listed(&self, book: Uuid, offer: Uuid) -> Value {
        self.eventually(|| async {
            let response = self.get(&format!("/books/{book}")).await;
            if response.status() != StatusCode::OK {
                return None;
            }
            let listed: Value = response.json().await.ok()?;
            (listed["offerId"] == json!(offer)).then_some(listed)
        })
        .await
    }

    /// Polls `check` until it returns `Some`, for effects applied
    /// asynchronously; panics after a generous deadline.
    pub async fn eventually<T, F, Fut>(&self, check: F) -> T
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "condition not met in {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the order to leave `pending` and returns it.
    pub async fn settled_order(&self, id: Uuid) -> Value {
        self.eventually(|| async {
            let response = self.get(&format!("/orders/{id}")).await;
            if response.status() != 200 {
                return None;
            }
            let order: Value = response.json().await.ok()?;
            (order["status"] != "pending").then_some(order)
        })
        .await
    }

    /// `PUT path` as part of the trace `trace` (W3C `traceparent`), so the
    /// test can follow the command it sends in the logs.
    pub async fn put_traced(&self, path: &str, body: &Value, trace: &TraceContext) -> Response {
        self.client
            .put(format!("{}{path}", self.address))
            .header("traceparent", trace.to_string())
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// `POST path` as part of the trace `trace`, as [`TestApp::put_traced`].
    pub async fn post_traced(&self, path: &str, body: &Value, trace: &TraceContext) -> Response {
        self.client
            .post(format!("{}{path}", self.address))
            .header("traceparent", trace.to_string())
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Waits until `count` commands sent in `trace` have been handled
    /// without error (the application logs `command applied` for each);
    /// fails if more than `count` were.
    pub async fn await_commands_applied(&self, trace: &TraceContext, count: usize) {
        let trace_id = trace.trace_id_hex();
        let applied = self
            .eventually(|| async {
                let applied = logged("command applied", &[("trace_id", &trace_id)]).len();
                (applied >= count).then_some(applied)
            })
            .await;
        assert_eq!(applied, count, "commands applied in trace {trace_id}");
    }

    /// Messages given up on: the in-memory buses' dead letters, and with
    /// RabbitMQ the messages parked in the dead-letter queues.
    pub async fn dead_letter_count(&self) -> usize {
        let mut count = self.dead_letters.len();
        if let Some(worker) = &self.worker {
            let (connection, channel) = broker().await;
            for work in worker.topology.work_queues() {
                let queue = Naming::dead_letter_queue(&work.queue);
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                };
                let parked = channel
                    .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                    .await
                    .unwrap_or_else(|error| panic!("dead-letter queue {queue}: {error}"))
                    .message_count();
                count += parked as usize;
            }
            let _ = connection.close(200, "counted".into()).await;
        }
        count
    }

    /// Why each message was given up on: the in-memory buses' dead letters,
    /// and with RabbitMQ the `x-error` of each message parked in the
    /// dead-letter queues (left there: read without acknowledging).
    pub async fn dead_letter_reasons(&self) -> Vec<String> {
        let mut reasons: Vec<String> = self
            .dead_letters
            .list()
            .into_iter()
            .map(|letter| letter.error)
            .collect();
        if let Some(worker) = &self.worker {
            let (connection, channel) = broker().await;
            for work in worker.topology.work_queues() {
                let queue = Naming::dead_letter_queue(&work.queue);
                while let Some(message) = channel
                    .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                    .await
                    .unwrap_or_else(|error| panic!("dead-letter queue {queue}: {error}"))
                {
                    let reason = message
                        .properties
                        .headers()
                        .as_ref()
                        .and_then(|headers| headers.inner().get(bus_rabbitmq::wire::headers::ERROR))
                        .map(|value| match value {
                            AMQPValue::LongString(text) => text.to_string(),
                            other => format!("{other:?}"),
                        })
                        .unwrap_or_default();
                    reasons.push(reason);
                }
            }
            // Closing without acknowledging puts the messages back.
            let _ = connection.close(200, "read".into()).await;
        }
        reasons
    }

    /// Stops the worker gracefully and starts a new one with the same
    /// flags on the same database and namespace (a restart).
    pub async fn restart_worker(&mut self) {
        let worker = self.worker.take().expect("a RabbitMQ app has a worker");
        let (_, config) = worker.stop().await;
        let Some(TestDb::Postgres(pool)) = &self.db else {
            panic!("the RabbitMQ bus runs on PostgreSQL only");
        };
        self.worker = Some(RunningWorker::start(config, pool.clone()).await);
    }

    /// Messages ready in `queue` (a passive declare).
    pub async fn queue_depth(&self, queue: &str) -> u32 {
        let (connection, channel) = broker().await;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let depth = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .unwrap_or_else(|error| panic!("queue {queue}: {error}"))
            .message_count();
        let _ = connection.close(200, "counted".into()).await;
        depth
    }

    /// Whether a command is applied before its write is answered (the
    /// in-memory sync bus), so a handler's refusal is the answer's status.
    pub fn is_sync(&self) -> bool {
        self.bus == BusKind::InMemory
    }

    /// Stops the app (and its worker) gracefully, waits until they have
    /// drained, and deletes the test's RabbitMQ namespace.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("clean shutdown");
        }
        if let Some(worker) = self.worker.take() {
            let (topology, _) = worker.stop().await;
            delete_topology(&topology).await;
        }
        if let Some(db) = self.db.take() {
            db.remove().await;
        }
    }
}

/// A connection and a channel to the test broker.
async fn broker() -> (Connection, bus_rabbitmq::lapin::Channel) {
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("the test broker runs on AMQP_URL");
    let channel = connection.create_channel().await.expect("channel");
    (connection, channel)
}

/// Deletes every exchange and queue of a test namespace.
async fn delete_topology(topology: &Topology) {
    let (connection, channel) = broker().await;
    for queue in topology.queues() {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for exchange in topology.exchanges() {
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "test done".into()).await;
}

/// One line the application logged: its message and its fields, those of
/// the spans it was logged in included (as a JSON log line has them).
#[derive(Debug, Clone)]
pub struct LogLine {
    pub message: String,
    pub fields: BTreeMap<&'static str, String>,
    /// The names of the spans it was logged in, outermost first.
    pub spans: Vec<&'static str>,
}

/// The application's `debug` and higher lines (the marketplace's, the bus's
/// and the request span's own), with the fields of their spans, kept for
/// [`logged`]: what a handler reports is what an operator reads. Tests tell
/// their lines apart by the ids they chose (order ids, trace ids).
static LOGGED: Mutex<Vec<LogLine>> = Mutex::new(Vec::new());

static LOGGING: LazyLock<()> = LazyLock::new(|| {
    let shown = std::env::var("TEST_LOG")
        .ok()
        .filter(|value| !value.is_empty())
        .map(|value| {
            let filter = match value.as_str() {
                "1" | "true" | "yes" | "on" => std::env::var("RUST_LOG")
                    .unwrap_or_else(|_| telemetry::DEFAULT_FILTER.to_owned()),
                filter => filter.to_owned(),
            };
            let filter = EnvFilter::try_new(&filter)
                .unwrap_or_else(|error| panic!("TEST_LOG={value} is not a log filter: {error}"));
            fmt::layer().with_test_writer().with_filter(filter)
        });
    // The bus's spans (`handle`, `publish`, `settle`) and lines too, the
    // RabbitMQ worker's included: their fields
    // (the trace id) are on the lines logged inside them.
    let kept = Targets::new()
        .with_target("marketplace", Level::DEBUG)
        .with_target("bus_core", Level::DEBUG)
        .with_target("bus_rabbitmq", Level::DEBUG)
        // The request span's own lines (`finished processing request`).
        .with_target("tower_http", Level::DEBUG);
    tracing_subscriber::registry()
        .with(Keep.with_filter(kept))
        .with(shown)
        .init();
});

/// Installs the logging of this test binary, once.
pub fn init_logging() {
    LazyLock::force(&LOGGING);
}

/// The lines logged so far saying `message` with every `(field, value)`.
pub fn logged(message: &str, fields: &[(&str, &str)]) -> Vec<LogLine> {
    LOGGED
        .lock()
        .expect("log lines")
        .iter()
        .filter(|line| {
            line.message == message
                && fields
                    .iter()
                    .all(|(name, value)| line.fields.get(name).map(String::as_str) == Some(value))
        })
        .cloned()
        .collect()
}

/// The layer filling [`LOGGED`].
struct Keep;

/// The fields of a span, kept in its extensions for the lines inside it.
struct SpanFields(LogLine);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Keep {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut fields = LogLine {
            message: String::new(),
            fields: BTreeMap::new(),
            spans: Vec::new(),
        };
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(SpanFields(fields)) = span.extensions_mut().get_mut::<SpanFields>() {
                values.record(fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = LogLine {
            message: String::new(),
            fields: BTreeMap::new(),
            spans: Vec::new(),
        };
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                line.spans.push(span.name());
                if let Some(SpanFields(fields)) = span.extensions().get::<SpanFields>() {
                    line.fields
                        .extend(fields.fields.iter().map(|(k, v)| (*k, v.clone())));
                }
            }
        }
        event.record(&mut line);
        LOGGED.lock().expect("log lines").push(line);
    }
}

impl tracing::field::Visit for LogLine {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl LogLine {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            name => {
                self.fields.insert(name, value);
            }
        }
    }
}

pub struct Seeded {
    pub user: Uuid,
    pub book: Uuid,
    pub offer: Uuid,
}

/// The value of header `name` of `response` as text (empty if absent or
/// not text).
pub fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Asserts an RFC 9457 problem answer with `status`; returns its body.
pub async fn assert_problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    assert_eq!(
        header(&response, "content-type"),
        "application/problem+json"
    );
    let body: Value = response.json().await.expect("problem body");
    assert_eq!(body["status"], status);
    for member in ["type", "title", "detail"] {
        assert!(body[member].is_string(), "problem has {member}: {body}");
    }
    body
}

/// One test per bus and store, each calling `$run(db, bus)` (an async fn of
/// a [`TestDb`] and a [`BusKind`]) on its own database:
/// `on_the_in_memory_bus`, `on_the_in_memory_async_bus`, `on_the_durable_bus`
/// and `on_rabbitmq` on PostgreSQL, `on_sqlite_with_the_in_memory_bus`,
/// `on_sqlite_with_the_in_memory_async_bus` and
/// `on_sqlite_with_the_durable_bus` on an SQLite file.
#[macro_export]
macro_rules! tests_on_every_bus {
    ($run:ident) => {
        #[sqlx::test(migrator = "marketplace::MIGRATOR")]
        async fn on_the_in_memory_bus(pool: sqlx::PgPool) {
            $run(
                $crate::helpers::TestDb::Postgres(pool),
                marketplace::config::BusKind::InMemory,
            )
            .await
        }

        #[sqlx::test(migrator = "marketplace::MIGRATOR")]
        async fn on_the_in_memory_async_bus(pool: sqlx::PgPool) {
            $run(
                $crate::helpers::TestDb::Postgres(pool),
                marketplace::config::BusKind::InMemoryAsync,
            )
            .await
        }

        #[sqlx::test(migrator = "marketplace::MIGRATOR")]
        async fn on_the_durable_bus(pool: sqlx::PgPool) {
            $run(
                $crate::helpers::TestDb::Postgres(pool),
                marketplace::config::BusKind::Durable,
            )
            .await
        }

        #[sqlx::test(migrator = "marketplace::MIGRATOR")]
        async fn on_rabbitmq(pool: sqlx::PgPool) {
            $run(
                $crate::helpers::TestDb::Postgres(pool),
                marketplace::config::BusKind::Rabbitmq,
            )
            .await
        }

        #[tokio::test]
        async fn on_sqlite_with_the_in_memory_bus() {
            $run(
                $crate::helpers::TestDb::sqlite().await,
                marketplace::config::BusKind::InMemory,
            )
            .await
        }

        #[tokio::test]
        async fn on_sqlite_with_the_in_memory_async_bus() {
            $run(
                $crate::helpers::TestDb::sqlite().await,
                marketplace::config::BusKind::InMemoryAsync,
            )
            .await
        }

        #[tokio::test]
        async fn on_sqlite_with_the_durable_bus() {
            $run(
                $crate::helpers::TestDb::sqlite().await,
                marketplace::config::BusKind::Durable,
            )
            .await
        }
    };
}

/// Runs each scenario once per bus and store, each on its own database (and,
/// for RabbitMQ, its own namespace), as the tests of
/// [`tests_on_every_bus!`] in a module named after the scenario.
#[macro_export]
macro_rules! on_every_bus {
    ($(async fn $name:ident($app:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn scenario($app: &$crate::helpers::TestApp) $body

            async fn run(db: $crate::helpers::TestDb, bus: marketplace::config::BusKind) {
                let app = $crate::helpers::spawn(db, bus, &[]).await;
                scenario(&app).await;
                app.shutdown().await;
            }

            $crate::tests_on_every_bus!(run);
        }
    )*};
}

/// An API started from an [`App`] in this process, served until [`Running::stop`].
pub struct Running {
    /// `http://host:port` of the running API.
    pub base: String,
    client: reqwest::Client,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub fn start(app: App) -> Self {
        let base = format!("http://{}", app.local_addr().expect("bound"));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(app.run(async {
            let _ = stopped.await;
        }));
        Self {
            base,
            client: reqwest::Client::new(),
            stop,
            task,
        }
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> u16 {
        self.client
            .request(method, format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("request sent")
            .status()
            .as_u16()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("server task")
            .expect("clean shutdown");
    }
}
