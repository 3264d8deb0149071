//! The brokers the fault scenarios run on, and how a test asks them: the
//! local node on 5672, or the local three-node cluster of
//! `deploy/local-rabbitmq-cluster.sh`, whose per-node subcommands
//! (`kill N`, `stop-node N`, `start-node N`) fail and restart its nodes.

use std::{collections::BTreeMap, path::PathBuf, process::Stdio};

use serde_json::Value;
use tokio::process::Command;

/// The local broker most scenarios run on.
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The variable naming the cluster's nodes.
pub const URLS_VAR: &str = "FAULTS_CLUSTER_URLS";

/// Runs `command` (no standard input) to its end, asserts that it
/// succeeded, and returns its standard output; `what` names it in the
/// failure, with what it printed.
pub async fn run_to_success(command: &mut Command, what: &str) -> String {
    let output = command
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|error| panic!("{what} cannot start: {error}"));
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The broker a scenario's processes use, and how the test asks it.
#[derive(Clone, Debug)]
pub struct Broker {
    /// The processes' `AMQP_URL`: one broker, or a cluster's nodes,
    /// comma-separated. The test itself connects to the first.
    pub amqp_url: String,
    /// The processes' `--queue-type` (`classic` or `quorum`).
    pub queue_type: &'static str,
    /// The node `rabbitmqctl` asks (`-n`); `None`: the local default node.
    pub node: Option<String>,
}

impl Broker {
    /// The local broker on 5672, classic queues.
    pub fn local() -> Self {
        Self {
            amqp_url: AMQP_URL.to_owned(),
            queue_type: "classic",
            node: None,
        }
    }

    /// The address the test connects to (the first of a list).
    pub fn first_url(&self) -> &str {
        self.amqp_url.split(',').next().unwrap_or(&self.amqp_url)
    }

    /// `rabbitmqctl ARGS` against [`Broker::node`]: its standard output.
    pub async fn ctl(&self, args: &[&str]) -> String {
        let mut command = Command::new("rabbitmqctl");
        if let Some(node) = &self.node {
            command.args(["-n", node]);
        }
        command.args(args);
        run_to_success(&mut command, &format!("rabbitmqctl {args:?}")).await
    }

    /// Messages ready in `queue` (a passive declare on [`Broker::first_url`]).
    pub async fn messages(&self, queue: &str) -> u32 {
        let connection =
            lapin::Connection::connect(self.first_url(), lapin::ConnectionProperties::default())
                .await
                .expect("broker answers");
        let channel = connection.create_channel().await.expect("channel");
        let declared = channel
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap_or_else(|error| panic!("queue {queue}: {error}"));
        let _ = connection.close(200, "OK".into()).await;
        declared.message_count()
    }
}

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
        let mut command = Command::new("bash");
        command.arg(Self::script_path()).args(args);
        run_to_success(&mut command, &format!("local-rabbitmq-cluster.sh {args:?}")).await;
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

    /// The node `pick` designates, given how many queues each node leads
    /// ([`LocalCluster::leaders`]).
    pub async fn pick(&self, pick: NodePick, leaders: &BTreeMap<usize, usize>) -> usize {
        match pick {
            NodePick::MostLeaders => {
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
