//! Node failures of a three-node RabbitMQ cluster under load, quorum
//! queues: the local cluster of `deploy/local-rabbitmq-cluster.sh`, whose
//! per-node subcommands (`kill N`, `stop-node N`, `start-node N`) these
//! tests call.
//!
//! Opt-in: the tests are ignored, and skip (saying so) unless
//! `FAULTS_CLUSTER_URLS` holds the cluster's AMQP URLs, node 1 first, as
//! the script's `start` prints them. The nodes are named
//! `$CLUSTER_NAME-N@localhost` (`CLUSTER_NAME` as the cluster was started
//! with, default `marketplace`); the script inherits the test's
//! environment, so the same `CLUSTER_NAME`, `BASE_DIR` and ports apply.

use std::{
    collections::BTreeMap, os::unix::process::ExitStatusExt, path::PathBuf, process::Stdio,
    time::Duration,
};

use bus_core::{command_fn, HandlerError, Handlers, MessageContext};
use bus_rabbitmq::RabbitWorker;
use marketplace::{commands::CreateOffer, config::WorkerConfig};
use serde_json::{json, Value};
use tokio::process::Command;
use uuid::Uuid;

use crate::harness::{self, Broker, Bus, Fault, Report, Scenario};

/// The variable naming the cluster's nodes.
const URLS_VAR: &str = "FAULTS_CLUSTER_URLS";
/// Set in the environment of the crashing worker process.
const CRASH_WORKER_VAR: &str = "FAULTS_CRASH_WORKER";
/// The crashing worker: this test binary, running only this test.
const CRASH_WORKER_TEST: &str = "cluster::crashing_worker_process";
/// Deliveries before a command is dead-lettered in the crash scenario (the
/// quorum queues' `x-delivery-limit`): few, so the scenario is short.
const CRASH_MAX_ATTEMPTS: u32 = 3;
/// The signal `std::process::abort` ends a process with (Linux).
const SIGABRT: i32 = 6;
/// How long the crash scenario may take to park its command.
const CRASH_PATIENCE: Duration = Duration::from_secs(120);

/// The local three-node cluster, driven through its script.
#[derive(Clone, Debug)]
pub struct LocalCluster {
    /// The nodes' AMQP URLs, node 1 first.
    urls: Vec<String>,
    /// `$CLUSTER_NAME` of the script.
    name: String,
}

/// How a node fails.
#[derive(Clone, Copy, Debug)]
pub enum NodeFailure {
    /// Its Erlang VM killed with SIGKILL (a crash, a lost machine).
    Kill,
    /// Stopped gracefully (`rabbitmqctl stop`: a maintenance restart).
    Stop,
}

/// Which node fails.
#[derive(Clone, Copy, Debug)]
pub enum NodePick {
    /// The node the API's connection to the broker is on, so the API has to
    /// move to another.
    TheApis,
    /// The node leading most of the scenario's quorum queues, so most
    /// queues elect a new leader.
    MostLeaders,
}

/// What happened while a node was down.
#[derive(Clone, Debug)]
pub struct NodeOutage {
    pub node: String,
    pub failure: NodeFailure,
    /// Queues of the scenario's namespace the node led when it failed.
    pub leaders: usize,
    /// Orders answered `200` while it was down.
    pub accepted_while_down: usize,
    /// Orders applied while it was down.
    pub applied_while_down: usize,
}

impl LocalCluster {
    /// The cluster of `FAULTS_CLUSTER_URLS`, or `None` (the test skips).
    pub fn from_env() -> Option<Self> {
        let urls = std::env::var(URLS_VAR)
            .ok()
            .filter(|urls| !urls.is_empty())?;
        let urls: Vec<String> = urls.split(',').map(str::to_owned).collect();
        assert_eq!(urls.len(), 3, "{URLS_VAR}: the three nodes' URLs");
        Some(Self {
            urls,
            name: std::env::var("CLUSTER_NAME").unwrap_or_else(|_| "marketplace".into()),
        })
    }

    /// The Erlang node name of node `n` (1, 2 or 3).
    pub fn node_name(&self, n: usize) -> String {
        format!("{}-{n}@localhost", self.name)
    }

    /// The broker of a scenario: the three nodes, quorum queues, and node 1
    /// asked by `rabbitmqctl` (the failed node is back by then).
    pub fn broker(&self) -> Broker {
        Broker {
            amqp_url: self.urls.join(","),
            queue_type: "quorum",
            node: Some(self.node_name(1)),
        }
    }

    /// Runs `deploy/local-rabbitmq-cluster.sh ARGS`.
    async fn script(&self, args: &[&str]) {
        let output = Command::new("bash")
            .arg(Self::script_path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .expect("bash runs");
        assert!(
            output.status.success(),
            "local-rabbitmq-cluster.sh {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The script's path.
    fn script_path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local-rabbitmq-cluster.sh")
    }

    /// Node `n` fails as `failure` says; returns once its VM has exited,
    /// with a guard that starts it again should the test fail before
    /// [`DownNode::start_again`] (so the next test finds three nodes).
    pub async fn fail(&self, n: usize, failure: NodeFailure) -> DownNode {
        let node = n.to_string();
        match failure {
            NodeFailure::Kill => self.script(&["kill", &node]).await,
            NodeFailure::Stop => self.script(&["stop-node", &node]).await,
        }
        DownNode {
            cluster: self.clone(),
            node: n,
            down: true,
        }
    }

    /// How many of `namespace`'s queues each node (1, 2, 3) leads.
    pub async fn leaders(&self, namespace: &str) -> BTreeMap<usize, usize> {
        let listed = self
            .broker()
            .ctl(&["-q", "--no-table-headers", "list_queues", "name", "leader"])
            .await;
        let mut leaders = BTreeMap::new();
        for (queue, leader) in listed.lines().filter_map(|line| line.split_once('\t')) {
            if !queue.starts_with(namespace) {
                continue;
            }
            if let Some(n) = (1..=3).find(|&n| leader.trim() == self.node_name(n)) {
                *leaders.entry(n).or_insert(0) += 1;
            }
        }
        leaders
    }

    /// The node `pick` designates for a scenario on `namespace`.
    pub async fn pick(&self, pick: NodePick, namespace: &str) -> usize {
        match pick {
            NodePick::MostLeaders => {
                let leaders = self.leaders(namespace).await;
                let (node, _) = leaders
                    .iter()
                    .max_by_key(|(_, count)| **count)
                    .expect("the scenario's queues have leaders");
                *node
            }
            NodePick::TheApis => {
                // The server port of each connection, by connection name.
                let listed = self
                    .broker()
                    .ctl(&[
                        "-q",
                        "--formatter",
                        "json",
                        "list_connections",
                        "port",
                        "client_properties",
                    ])
                    .await;
                let connections: Vec<Value> =
                    serde_json::from_str(&listed).expect("list_connections as JSON");
                let port = connections
                    .iter()
                    .find(|connection| {
                        connection["client_properties"]
                            .to_string()
                            .contains("marketplace-api")
                    })
                    .and_then(|connection| connection["port"].as_u64())
                    .unwrap_or_else(|| panic!("the API is connected: {connections:?}"));
                self.urls
                    .iter()
                    .position(|url| url.contains(&format!(":{port}/")))
                    .map(|index| index + 1)
                    .unwrap_or_else(|| panic!("port {port} is one of {:?}", self.urls))
            }
        }
    }
}

/// A node [`LocalCluster::fail`] took down.
pub struct DownNode {
    cluster: LocalCluster,
    node: usize,
    down: bool,
}

impl DownNode {
    /// Starts the node again; returns once the cluster has its three nodes.
    pub async fn start_again(mut self) {
        self.cluster
            .script(&["start-node", &self.node.to_string()])
            .await;
        self.down = false;
    }
}

impl Drop for DownNode {
    fn drop(&mut self) {
        if self.down {
            // The test failed with the node down: start it (blocking) for
            // the tests after this one.
            let _ = std::process::Command::new("bash")
                .arg(LocalCluster::script_path())
                .args(["start-node", &self.node.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status();
        }
    }
}

/// The cluster, or a line saying why the test does nothing.
fn cluster_or_skip() -> Option<LocalCluster> {
    let cluster = LocalCluster::from_env();
    if cluster.is_none() {
        eprintln!(
            "skipped: {URLS_VAR} is not set (start a cluster with \
             `sudo bash deploy/local-rabbitmq-cluster.sh start` and set it to the printed AMQP_URL)"
        );
    }
    cluster
}

/// What a node failure must not break: every `200` applied once, only
/// `200` or `503` answered, nothing dead-lettered, the same API and workers
/// still running, and orders accepted and applied while the node was down.
async fn assert_the_node_failure_lost_nothing(report: &Report) {
    report.assert_nothing_lost_nothing_doubled().await;
    assert_eq!(report.other_errors, 0, "only 200 or 503: {report:?}");
    assert_eq!(report.dead_letters, 0, "nothing dead-lettered: {report:?}");
    assert!(
        report.same_processes_running,
        "the API and the workers reconnected by themselves, never restarted: {report:?}"
    );
    let outage = report.node_outage.as_ref().expect("a node failed");
    assert!(
        outage.accepted_while_down >= 300 && outage.applied_while_down >= 300,
        "orders accepted and applied on the two nodes left: {outage:?}"
    );
    println!(
        "node {} ({:?}): led {} of the namespace's queues; while it was down {} orders accepted, {} applied",
        outage.node,
        outage.failure,
        outage.leaders,
        outage.accepted_while_down,
        outage.applied_while_down
    );
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
#[ignore = "kills a node of a local RabbitMQ cluster: FAULTS_CLUSTER_URLS, --ignored"]
async fn a_cluster_node_killed_mid_load_loses_no_200_and_applies_none_twice(pool: sqlx::PgPool) {
    let Some(cluster) = cluster_or_skip() else {
        return;
    };
    let _serial = harness::SERIAL.lock().await;
    let report = Scenario::on_broker(pool, cluster.broker(), 2)
        .await
        .run(Fault::ClusterNode {
            cluster,
            failure: NodeFailure::Kill,
            pick: NodePick::TheApis,
        })
        .await;
    assert_the_node_failure_lost_nothing(&report).await;
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
#[ignore = "stops a node of a local RabbitMQ cluster: FAULTS_CLUSTER_URLS, --ignored"]
async fn the_node_leading_most_queues_stopped_mid_load_loses_no_200_and_applies_none_twice(
    pool: sqlx::PgPool,
) {
    let Some(cluster) = cluster_or_skip() else {
        return;
    };
    let _serial = harness::SERIAL.lock().await;
    let report = Scenario::on_broker(pool, cluster.broker(), 2)
        .await
        .run(Fault::ClusterNode {
            cluster,
            failure: NodeFailure::Stop,
            pick: NodePick::MostLeaders,
        })
        .await;
    let outage = report.node_outage.as_ref().expect("a node failed");
    assert!(
        outage.leaders > 0,
        "the stopped node led queues: {outage:?}"
    );
    assert_the_node_failure_lost_nothing(&report).await;
}

/// A handler that takes the whole process down, on every delivery.
async fn crash(_offer: CreateOffer, _context: MessageContext) -> Result<(), HandlerError> {
    std::process::abort()
}

/// Not a test by itself: the worker process the crash scenario below starts
/// (this binary, run with [`CRASH_WORKER_VAR`] set): the real RabbitMQ
/// worker, configured like `marketplace worker` from the environment,
/// consuming the marketplace's `CreateOffer` with [`crash`].
#[tokio::test]
#[ignore = "the crashing worker of the delivery-limit scenario; does nothing on its own"]
async fn crashing_worker_process() {
    if std::env::var_os(CRASH_WORKER_VAR).is_none() {
        eprintln!("nothing to do: the delivery-limit scenario runs this as its worker");
        return;
    }
    let config = WorkerConfig::from_args(std::iter::empty::<String>())
        .expect("worker settings from the environment");
    let handlers = Handlers::builder()
        .command::<CreateOffer, _>(command_fn(crash))
        .build()
        .expect("handlers");
    RabbitWorker::new(&handlers, config.rabbit_config())
        .expect("worker")
        .run(std::future::pending())
        .await
        .expect("the worker runs until it crashes");
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
#[ignore = "restarts a crashing worker on a local RabbitMQ cluster: FAULTS_CLUSTER_URLS, --ignored"]
async fn a_command_crashing_its_worker_on_every_delivery_is_parked_in_its_dlq_after_the_delivery_limit(
    pool: sqlx::PgPool,
) {
    let Some(cluster) = cluster_or_skip() else {
        return;
    };
    let _serial = harness::SERIAL.lock().await;
    let broker = cluster.broker();
    let database_url = harness::database_url(&pool);
    let namespace = format!("faults-crash-{}", Uuid::new_v4().simple());
    let attempts = CRASH_MAX_ATTEMPTS.to_string();
    let mut env = harness::process_env(&broker, &database_url, &namespace);
    env.push(("MARKETPLACE_RETRY_MAX_ATTEMPTS", attempts.clone()));
    let api = harness::spawn_with("serve", Bus::Rabbitmq, &env).await;
    let work_queue = format!("{namespace}.command.marketplace.CreateOffer");
    let dead_letters = format!("{work_queue}.dlq");

    let offer = Uuid::new_v4();
    let response = reqwest::Client::new()
        .post(format!("{}/offer", api.address()))
        .json(&json!({
            "id": offer, "bookId": Uuid::new_v4(), "sellerId": Uuid::new_v4(),
            "price": 10.0, "stock": 1
        }))
        .send()
        .await
        .expect("the API answers");
    assert_eq!(response.status(), 200, "the offer is accepted");

    // A supervisor's loop: start the worker again each time it dies, until
    // the offer is parked (or the restarts show it loops).
    let started = tokio::time::Instant::now();
    let mut crashes = 0u32;
    'supervise: loop {
        let mut worker = Command::new(std::env::current_exe().expect("this test binary"))
            .args([
                CRASH_WORKER_TEST,
                "--exact",
                "--ignored",
                "--test-threads=1",
            ])
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .env(CRASH_WORKER_VAR, "1")
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the crashing worker starts");
        loop {
            tokio::select! {
                status = worker.wait() => {
                    let status = status.expect("the worker's exit status");
                    assert_eq!(
                        status.signal(),
                        Some(SIGABRT),
                        "the worker ended by its handler's abort, not otherwise: {status}"
                    );
                    crashes += 1;
                    assert!(
                        crashes <= CRASH_MAX_ATTEMPTS + 1,
                        "the offer loops: {crashes} crashes, still not in {dead_letters}"
                    );
                    continue 'supervise;
                }
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    if broker.messages(&dead_letters).await > 0 {
                        let _ = worker.start_kill();
                        let _ = worker.wait().await;
                        break 'supervise;
                    }
                    assert!(
                        started.elapsed() < CRASH_PATIENCE,
                        "not parked after {CRASH_PATIENCE:?} ({crashes} crashes)"
                    );
                }
            }
        }
    }
    let parked = broker.messages(&dead_letters).await;
    let waiting = broker.messages(&work_queue).await;

    // The dead-letter tool reports it, with the broker's reason.
    let output = Command::new(env!("CARGO_BIN_EXE_marketplace"))
        .args([
            "dead-letters",
            "list",
            "--bus",
            "rabbitmq",
            "--group-by",
            "reason",
            "--json",
        ])
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("marketplace dead-letters runs");
    assert!(
        output.status.success(),
        "dead-letters list: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let groups: Value = serde_json::from_slice(&output.stdout).expect("JSON groups");
    let (applied,): (i64,) = sqlx::query_as("SELECT count(*) FROM offers WHERE id = $1")
        .bind(offer)
        .fetch_one(&pool)
        .await
        .expect("count offers");
    api.kill().await;
    harness::delete_namespace(&broker, &namespace).await;

    println!(
        "crashes {crashes} (delivery limit {CRASH_MAX_ATTEMPTS}), parked {parked}, \
         left in the work queue {waiting}, dead-letters list: {groups}"
    );
    assert!(
        crashes >= CRASH_MAX_ATTEMPTS,
        "delivered up to the limit before parking: {crashes} crashes"
    );
    assert_eq!(parked, 1, "the offer is in {dead_letters}");
    assert_eq!(waiting, 0, "nothing left in {work_queue}");
    assert_eq!(applied, 0, "the crashing handler never applied it");
    let groups = groups.as_array().expect("a list of groups");
    assert_eq!(groups.len(), 1, "one group: {groups:?}");
    assert_eq!(groups[0]["count"], 1, "{groups:?}");
    let reason = groups[0]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("delivery_limit"),
        "parked by the broker's delivery limit: {reason}"
    );
}
