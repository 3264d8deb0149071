//! Processes, load and bookkeeping for the fault scenarios.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex as StdMutex,
    },
    time::Duration,
};

use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::{
    process::{Child, Command},
    sync::Mutex,
};
use uuid::Uuid;

use crate::broker::{Broker, LocalCluster, NodeFailure, NodeOutage, NodePick};

/// Scenarios restart the shared broker: one at a time.
pub static SERIAL: Mutex<()> = Mutex::const_new(());

/// Deliveries of a failing command before it is dead-lettered (and, on
/// quorum queues, the delivery limit), as the processes are started.
const RETRY_MAX_ATTEMPTS: u32 = 20;

/// Offers the load buys from (spread to avoid one hot row).
const OFFERS: usize = 4;
const STOCK: i64 = 1_000_000;
/// Concurrent clients.
const CLIENTS: usize = 16;
/// Upper bound on requests of one scenario, so it always ends (a database
/// outage of a minute is accepted at full speed by the RabbitMQ bus).
const MAX_REQUESTS: usize = 100_000;
/// How long one phase of the load may go without reaching its count.
const STALLED: Duration = Duration::from_secs(180);

pub enum Fault {
    None,
    BrokerRestart {
        down_for: Duration,
    },
    KillWorker,
    /// A node of the local cluster fails (SIGKILL, or a graceful stop)
    /// mid-load and is started again once orders are accepted and applied
    /// without it.
    ClusterNode {
        cluster: LocalCluster,
        failure: NodeFailure,
        pick: NodePick,
    },
    /// Stops the private PostgreSQL cluster (never the shared one) for
    /// `down_for`, then starts it again.
    DatabaseOutage {
        down_for: Duration,
    },
}

/// Which bus `marketplace serve` runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// The API publishes, worker processes apply.
    Rabbitmq,
    /// The API applies in-process, on a bounded async queue.
    InMemoryAsync,
}

impl Bus {
    fn flag(self) -> &'static str {
        match self {
            Self::Rabbitmq => "rabbitmq",
            Self::InMemoryAsync => "in-memory-async",
        }
    }
}

/// The PostgreSQL cluster database outages stop: one created for the fault
/// tests alone (`private-postgres.sh` creates it, runs the tests, drops it),
/// so the shared cluster other tests use is never stopped. Read from
/// `FAULTS_PG_URL` (server URL, no database: `postgres://postgres@127.0.0.1:5499`)
/// and `FAULTS_PG_CLUSTER` (`<version> <name>`, as `pg_ctlcluster` takes them).
pub struct PrivatePostgres {
    server_url: String,
    version: String,
    cluster: String,
}

impl PrivatePostgres {
    pub fn from_env() -> Self {
        let hint = "database outage tests need a private cluster: run marketplace/tests/faults/private-postgres.sh";
        let server_url = std::env::var("FAULTS_PG_URL").expect(hint);
        let cluster = std::env::var("FAULTS_PG_CLUSTER").expect(hint);
        let (version, cluster) = cluster
            .split_once(' ')
            .expect("FAULTS_PG_CLUSTER is `<version> <name>`");
        assert_ne!(cluster, "main", "never stop the shared cluster");
        Self {
            server_url: server_url.trim_end_matches('/').to_owned(),
            version: version.to_owned(),
            cluster: cluster.to_owned(),
        }
    }

    /// A fresh, migrated database on the private cluster.
    pub async fn fresh_database(&self) -> (PgPool, String) {
        let name = format!("faults_{}", Uuid::new_v4().simple());
        let admin = PgPool::connect(&format!("{}/postgres", self.server_url))
            .await
            .expect("private cluster answers");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("create database");
        admin.close().await;
        let url = format!("{}/{name}", self.server_url);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("fresh database");
        marketplace::MIGRATOR.run(&pool).await.expect("migrations");
        (pool, url)
    }

    async fn pg_ctlcluster(&self, action: &str) {
        let status = Command::new("pg_ctlcluster")
            .args([
                "--skip-systemctl-redirect",
                &self.version,
                &self.cluster,
                action,
            ])
            .args(if action == "stop" {
                &["-m", "fast"][..]
            } else {
                &[][..]
            })
            .stdout(Stdio::null())
            .status()
            .await
            .expect("pg_ctlcluster runs");
        assert!(status.success(), "pg_ctlcluster {action}");
    }
}

pub struct Scenario {
    pool: PgPool,
    bus: Bus,
    broker: Broker,
    private: Option<PrivatePostgres>,
    database_url: String,
    namespace: String,
    api: Process,
    workers: Vec<Process>,
    offers: Vec<Uuid>,
    /// The registered user who sells every offer and places every order
    /// (an order waits for its buyer to exist).
    user: Uuid,
    client: reqwest::Client,
}

pub struct Process {
    child: Child,
    address: String,
    /// The pid it was started with.
    pid: u32,
    /// The file its log goes to (without `TEST_LOG`; deleted when it is
    /// killed), so that a stalled scenario can show what it said.
    log: Option<PathBuf>,
}

impl Process {
    /// Still the process that was started: it has not exited.
    fn still_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None)) && self.child.id() == Some(self.pid)
    }

    /// Its base URL (`http://127.0.0.1:PORT`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Kills it (SIGKILL) and reaps it.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        if let Some(log) = &self.log {
            let _ = std::fs::remove_file(log);
        }
    }

    /// The last `lines` lines of its log file, if it has one.
    fn log_tail(&self, lines: usize) -> Option<String> {
        let text = std::fs::read_to_string(self.log.as_ref()?).ok()?;
        let all: Vec<&str> = text.lines().collect();
        Some(all[all.len().saturating_sub(lines)..].join("\n"))
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub accepted: Vec<Uuid>,
    pub unavailable: usize,
    pub other_errors: usize,
    /// What the first worker's `/health/ready` answered during a database
    /// outage (status and body), when there was one.
    pub readiness_during_outage: Option<(u16, String)>,
    /// Messages dead-lettered: in the namespace's `.dlq` queues (RabbitMQ)
    /// or the `bus_dead_letters` table (async bus).
    pub dead_letters: usize,
    /// What happened while a cluster node was down, with
    /// [`Fault::ClusterNode`].
    pub node_outage: Option<NodeOutage>,
    /// The API and every worker are the processes started at the beginning,
    /// still running at the end (none restarted, none exited).
    pub same_processes_running: bool,
    #[allow(dead_code)]
    pool: Option<PgPool>,
    offers: Vec<Uuid>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for tests");
    let database = pool
        .connect_options()
        .get_database()
        .expect("test database")
        .to_owned();
    let (server, _) = base.rsplit_once('/').expect("URL with a database");
    format!("{server}/{database}")
}

/// The environment of a scenario's processes (the worker a test runs
/// itself too): broker, namespace, retries, pool, no rate limit.
pub fn process_env(
    broker: &Broker,
    database_url: &str,
    namespace: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database_url.to_owned()),
        ("AMQP_URL", broker.amqp_url.clone()),
        ("MARKETPLACE_QUEUE_TYPE", broker.queue_type.to_owned()),
        ("MARKETPLACE_NAMESPACE", namespace.to_owned()),
        ("MARKETPLACE_RETRY_INITIAL_BACKOFF", "50ms".to_owned()),
        ("MARKETPLACE_RETRY_MAX_BACKOFF", "1s".to_owned()),
        (
            "MARKETPLACE_RETRY_MAX_ATTEMPTS",
            RETRY_MAX_ATTEMPTS.to_string(),
        ),
        ("MARKETPLACE_DB_MAX_CONNECTIONS", "8".to_owned()),
        // The load comes from one address: the per-client rate limit would
        // answer 429 to most of it (the API's edge has its own tests).
        ("MARKETPLACE_RATE_LIMIT_PER_SECOND", "0".to_owned()),
    ]
}

async fn spawn(role: &str, broker: &Broker, database_url: &str, namespace: &str) -> Process {
    spawn_on(role, Bus::Rabbitmq, broker, database_url, namespace).await
}

/// Starts `marketplace serve` (on `bus`) or `marketplace worker` and waits
/// until it is ready.
pub async fn spawn_on(
    role: &str,
    bus: Bus,
    broker: &Broker,
    database_url: &str,
    namespace: &str,
) -> Process {
    spawn_with(role, bus, &process_env(broker, database_url, namespace)).await
}

/// The same with the environment `env` (later entries win).
pub async fn spawn_with(role: &str, bus: Bus, env: &[(&'static str, String)]) -> Process {
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let mut command = Command::new(env!("CARGO_BIN_EXE_marketplace"));
    command.arg(role);
    if role == "serve" {
        command.args(["--bus", bus.flag(), "--listen", &address]);
    } else {
        command.args(["--health-listen", &address]);
    }
    // The processes' logs in the test's output when asked for (TEST_LOG=1,
    // TEST_LOG=warn, ...); otherwise their warnings in a file each, shown
    // if the scenario stalls.
    let (filter, stdout, log) = match process_log_filter() {
        Some(filter) => (filter, Stdio::inherit(), None),
        None => {
            let path = std::env::temp_dir().join(format!("marketplace-faults-{role}-{port}.log"));
            let file = std::fs::File::create(&path).expect("a log file in the temporary folder");
            (
                "warn,bus_rabbitmq=info".to_owned(),
                Stdio::from(file),
                Some(path),
            )
        }
    };
    command
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .env("RUST_LOG", filter)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(stdout)
        .kill_on_drop(true);
    let child = command.spawn().expect("marketplace binary starts");
    let pid = child.id().expect("a running process has a pid");
    let process = Process {
        child,
        address: format!("http://{address}"),
        pid,
        log,
    };
    wait_ready(&process.address).await;
    process
}

/// What the processes log to the test's output: `TEST_LOG=1` for their
/// default filter (or `RUST_LOG`), `TEST_LOG=<filter>` to choose; nothing
/// without `TEST_LOG`.
fn process_log_filter() -> Option<String> {
    let value = std::env::var("TEST_LOG").ok().filter(|v| !v.is_empty())?;
    Some(match value.as_str() {
        "1" | "true" | "yes" | "on" => std::env::var("RUST_LOG")
            .unwrap_or_else(|_| marketplace::telemetry::DEFAULT_FILTER.to_owned()),
        _ => value,
    })
}

async fn wait_ready(address: &str) {
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{address}/health/ready")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{address} never became ready");
}

impl Scenario {
    /// A fresh namespace, one API process, `workers` worker processes and
    /// `OFFERS` offers with plenty of stock.
    pub async fn new(pool: PgPool, workers: usize) -> Self {
        Self::on_broker(pool, Broker::local(), workers).await
    }

    /// The same on `broker` (a cluster's nodes, quorum queues).
    pub async fn on_broker(pool: PgPool, broker: Broker, workers: usize) -> Self {
        let database_url = database_url(&pool);
        Self::start(pool, database_url, None, Bus::Rabbitmq, broker, workers).await
    }

    /// The same on a fresh database of the private cluster, which a
    /// [`Fault::DatabaseOutage`] stops and starts.
    pub async fn on_private_postgres(bus: Bus, workers: usize) -> Self {
        let private = PrivatePostgres::from_env();
        let (pool, database_url) = private.fresh_database().await;
        Self::start(
            pool,
            database_url,
            Some(private),
            bus,
            Broker::local(),
            workers,
        )
        .await
    }

    async fn start(
        pool: PgPool,
        database_url: String,
        private: Option<PrivatePostgres>,
        bus: Bus,
        broker: Broker,
        workers: usize,
    ) -> Self {
        let namespace = format!("faults-{}", Uuid::new_v4().simple());
        let mut started = Vec::new();
        for _ in 0..workers {
            started.push(spawn_on("worker", bus, &broker, &database_url, &namespace).await);
        }
        let api = spawn_on("serve", bus, &broker, &database_url, &namespace).await;
        let mut scenario = Self {
            pool,
            bus,
            broker,
            private,
            database_url,
            namespace,
            api,
            workers: started,
            offers: Vec::new(),
            user: Uuid::new_v4(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .expect("client"),
        };
        scenario.seed().await;
        scenario
    }

    async fn seed(&mut self) {
        let seller = self.user;
        self.send("PUT", "/user", json!({ "id": seller, "name": "Seller" }))
            .await;
        for n in 0..OFFERS {
            let (book, offer) = (Uuid::new_v4(), Uuid::new_v4());
            self.send(
                "PUT",
                "/book",
                json!({ "id": book, "title": format!("Book {n}"), "author": "A" }),
            )
            .await;
            self.send(
                "POST",
                "/offer",
                json!({ "id": offer, "bookId": book, "sellerId": seller, "price": 1.0, "stock": STOCK }),
            )
            .await;
            self.offers.push(offer);
        }
        for _ in 0..600 {
            let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM offers")
                .fetch_one(&self.pool)
                .await
                .expect("count offers");
            if n as usize == OFFERS {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("seed offers never applied");
    }

    async fn send(&self, method: &str, path: &str, body: Value) {
        let request = match method {
            "PUT" => self.client.put(format!("{}{path}", self.api.address)),
            _ => self.client.post(format!("{}{path}", self.api.address)),
        };
        let response = request.json(&body).send().await.expect("seed request");
        assert_eq!(response.status(), 200, "{method} {path}");
    }

    /// Sends orders from `CLIENTS` clients while `fault` happens, then stops.
    pub async fn run(mut self, fault: Fault) -> Report {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let results: Arc<StdMutex<Vec<(Uuid, u16)>>> = Arc::default();
        let mut clients = Vec::new();
        for n in 0..CLIENTS {
            let (stop, sent, accepted, results) = (
                stop.clone(),
                sent.clone(),
                accepted.clone(),
                results.clone(),
            );
            let client = self.client.clone();
            let address = self.api.address.clone();
            let offer = self.offers[n % OFFERS];
            let buyer = self.user;
            clients.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) && sent.fetch_add(1, Ordering::SeqCst) < MAX_REQUESTS {
                    let id = Uuid::new_v4();
                    let body = json!({ "id": id, "userId": buyer, "items": [{ "offerId": offer, "quantity": 1 }] });
                    let status = match client.post(format!("{address}/order")).json(&body).send().await {
                        Ok(response) => response.status().as_u16(),
                        Err(_) => 0,
                    };
                    if status == 200 {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    } else {
                        // A mobile client backs off a little before trying again.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    results.lock().expect("results").push((id, status));
                }
            }));
        }

        // Waits until `counter` reaches `count` more than now. A load that
        // stalls, or runs out of requests first, fails the test instead of
        // hanging it.
        let more = |counter: &Arc<AtomicUsize>, more: usize| {
            let (counter, sent) = (counter.clone(), sent.clone());
            async move {
                let count = counter.load(Ordering::SeqCst) + more;
                let started = tokio::time::Instant::now();
                while counter.load(Ordering::SeqCst) < count {
                    let elapsed = started.elapsed();
                    assert!(
                        elapsed < STALLED && sent.load(Ordering::SeqCst) < MAX_REQUESTS,
                        "the load stalled at {} of {count} after {elapsed:?} ({} requests sent)",
                        counter.load(Ordering::SeqCst),
                        sent.load(Ordering::SeqCst)
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        more(&accepted, 300).await;
        let mut readiness = None;
        let mut node_outage = None;
        match fault {
            Fault::None => more(&accepted, 1_200).await,
            Fault::BrokerRestart { down_for } => {
                self.broker.ctl(&["stop_app"]).await;
                tokio::time::sleep(down_for).await;
                self.broker.ctl(&["start_app"]).await;
                self.broker.ctl(&["await_startup"]).await;
                // Keep the load on until the API accepts orders again.
                more(&accepted, 500).await;
            }
            Fault::DatabaseOutage { down_for } => {
                let private = self
                    .private
                    .as_ref()
                    .expect("a scenario on the private cluster");
                private.pg_ctlcluster("stop").await;
                let outage = tokio::time::Instant::now();
                // Writes keep being accepted meanwhile with the RabbitMQ bus
                // (the API only publishes) and the async bus (it queues).
                if let Some(worker) = self.workers.first() {
                    let client = self.client.clone();
                    let url = format!("{}/health/ready", worker.address);
                    let deadline = outage + down_for;
                    while tokio::time::Instant::now() < deadline {
                        if let Ok(response) = client.get(&url).send().await {
                            let status = response.status().as_u16();
                            let body = response.text().await.unwrap_or_default();
                            if status == 503 {
                                readiness = Some((status, body));
                                break;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
                tokio::time::sleep_until(outage + down_for).await;
                private.pg_ctlcluster("start").await;
                more(&accepted, 500).await;
            }
            Fault::KillWorker => {
                self.workers.remove(0).kill().await;
                more(&accepted, 300).await;
                self.workers
                    .push(spawn("worker", &self.broker, &self.database_url, &self.namespace).await);
                more(&accepted, 500).await;
            }
            Fault::ClusterNode {
                cluster,
                failure,
                pick,
            } => {
                let leaders = cluster.leaders(&self.namespace).await;
                let node = cluster.pick(pick, &leaders).await;
                let leaders = leaders.get(&node).copied().unwrap_or(0);
                let accepted_before = accepted.load(Ordering::SeqCst);
                let applied_before = self.applied().await;
                let down = cluster.fail(node, failure).await;
                // Orders keep being accepted, and applied, on the two nodes left.
                more(&accepted, 300).await;
                let applied_while_down =
                    self.await_applied(applied_before + 300).await - applied_before;
                let accepted_while_down = accepted.load(Ordering::SeqCst) - accepted_before;
                down.start_again().await;
                more(&accepted, 500).await;
                node_outage = Some(NodeOutage {
                    node: cluster.node_name(node),
                    failure,
                    leaders,
                    accepted_while_down,
                    applied_while_down,
                });
            }
        }
        stop.store(true, Ordering::SeqCst);
        for client in clients {
            client.await.expect("client task");
        }

        let results = std::mem::take(&mut *results.lock().expect("results"));
        let mut report = Report {
            pool: Some(self.pool.clone()),
            offers: self.offers.clone(),
            readiness_during_outage: readiness,
            node_outage,
            ..Report::default()
        };
        for (id, status) in results {
            match status {
                200 => report.accepted.push(id),
                503 => report.unavailable += 1,
                _ => report.other_errors += 1,
            }
        }
        // Everything accepted must be applied by the workers still running.
        let pool = self.pool.clone();
        let accepted = report.accepted.clone();
        let mut all_applied = false;
        for _ in 0..3_000 {
            let (applied,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM orders WHERE id = ANY($1) AND status <> 'pending'",
            )
            .bind(&accepted)
            .fetch_one(&pool)
            .await
            .expect("count orders");
            if applied as usize == accepted.len() {
                all_applied = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Some are still unapplied, so the assertions will fail: show what
        // the workers last said.
        if !all_applied {
            self.show_worker_logs();
        }
        report.dead_letters = self.dead_letters().await;
        report.same_processes_running = self
            .workers
            .iter_mut()
            .chain(std::iter::once(&mut self.api))
            .all(Process::still_running);
        self.cleanup().await;
        report
    }

    /// Prints the end of each worker's log file.
    fn show_worker_logs(&self) {
        for (n, worker) in self.workers.iter().enumerate() {
            if let Some(tail) = worker.log_tail(40) {
                eprintln!(
                    "--- the end of worker {n}'s log (pid {}):\n{tail}",
                    worker.pid
                );
            }
        }
    }

    /// Orders applied (confirmed or rejected), in the whole database.
    async fn applied(&self) -> usize {
        let (applied,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM orders WHERE status <> 'pending'")
                .fetch_one(&self.pool)
                .await
                .expect("count orders");
        applied as usize
    }

    /// Waits until `count` orders are applied; fails the test if they are
    /// not within [`STALLED`]. Returns how many are.
    async fn await_applied(&self, count: usize) -> usize {
        let started = tokio::time::Instant::now();
        loop {
            let applied = self.applied().await;
            if applied >= count {
                return applied;
            }
            if started.elapsed() >= STALLED {
                self.show_worker_logs();
                panic!("the workers stalled at {applied} of {count} applied orders");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn dead_letters(&self) -> usize {
        match self.bus {
            Bus::InMemoryAsync => {
                // The writer stores dead letters in the background: give it
                // a moment's margin by asking after the load has drained.
                let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM bus_dead_letters")
                    .fetch_one(&self.pool)
                    .await
                    .expect("count dead letters");
                n as usize
            }
            Bus::Rabbitmq => self
                .broker
                .ctl(&[
                    "-q",
                    "--no-table-headers",
                    "list_queues",
                    "name",
                    "messages",
                ])
                .await
                .lines()
                .filter_map(|line| line.split_once('\t'))
                .filter(|(name, _)| name.starts_with(&self.namespace) && name.ends_with(".dlq"))
                .filter_map(|(_, messages)| messages.trim().parse::<usize>().ok())
                .sum(),
        }
    }

    async fn cleanup(self) {
        for process in self.workers.into_iter().chain(std::iter::once(self.api)) {
            process.kill().await;
        }
        delete_namespace(&self.broker, &self.namespace).await;
    }
}

/// Deletes every queue and exchange of `namespace` from `broker`.
pub async fn delete_namespace(broker: &Broker, namespace: &str) {
    let list = |what: &'static str| async move {
        broker
            .ctl(&["-q", "--no-table-headers", what, "name"])
            .await
            .lines()
            .map(str::trim)
            .filter(|name| name.starts_with(namespace))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let connection =
        lapin::Connection::connect(broker.first_url(), lapin::ConnectionProperties::default())
            .await
            .expect("broker for cleanup");
    let channel = connection.create_channel().await.expect("channel");
    for queue in list("list_queues").await {
        let _ = channel
            .queue_delete(
                queue.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
    }
    for exchange in list("list_exchanges").await {
        let _ = channel
            .exchange_delete(
                exchange.as_str().into(),
                lapin::options::ExchangeDeleteOptions::default(),
            )
            .await;
    }
    let _ = connection.close(200, "cleanup".into()).await;
}

impl Report {
    /// 0 lost: every accepted order is applied. 0 applied twice: the stock
    /// claimed equals the confirmed orders, one copy each.
    pub async fn assert_nothing_lost_nothing_doubled(&self) {
        let pool = self.pool.as_ref().expect("pool");
        assert!(
            self.accepted.len() >= 300,
            "the load ran: {} accepted",
            self.accepted.len()
        );
        let (applied, confirmed): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status <> 'pending'), count(*) FILTER (WHERE status = 'confirmed')
             FROM orders WHERE id = ANY($1)",
        )
        .bind(&self.accepted)
        .fetch_one(pool)
        .await
        .expect("count orders");
        assert_eq!(
            applied as usize,
            self.accepted.len(),
            "lost: accepted orders not applied"
        );
        assert_eq!(
            confirmed, applied,
            "with this much stock every order is confirmed"
        );
        let (all_confirmed,): (i64,) =
            sqlx::query_as("SELECT count(*) FROM orders WHERE status = 'confirmed'")
                .fetch_one(pool)
                .await
                .expect("count orders");
        let (claimed,): (i64,) = sqlx::query_as(
            "SELECT COALESCE(sum($2::bigint - stock), 0)::bigint FROM offers WHERE id = ANY($1)",
        )
        .bind(&self.offers)
        .bind(STOCK)
        .fetch_one(pool)
        .await
        .expect("sum stock");
        assert_eq!(
            claimed, all_confirmed,
            "stock claimed once per confirmed order"
        );
        println!(
            "accepted {} (applied {applied}), answered 503 {}, other {}; confirmed in total {all_confirmed}, stock claimed {claimed}; dead letters {}",
            self.accepted.len(),
            self.unavailable,
            self.other_errors,
            self.dead_letters
        );
    }
}
