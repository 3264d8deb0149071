//! Node failures of a three-node RabbitMQ cluster under load, quorum
//! queues: the local cluster of `deploy/local-rabbitmq-cluster.sh`
//! ([`LocalCluster`]).
//!
//! Opt-in: the tests are ignored, and skip (saying so) unless
//! `FAULTS_CLUSTER_URLS` holds the cluster's AMQP URLs, node 1 first, as
//! the script's `start` prints them. The nodes are named
//! `$CLUSTER_NAME-N@localhost` (`CLUSTER_NAME` as the cluster was started
//! with, default `marketplace`); the script inherits the test's
//! environment, so the same `CLUSTER_NAME`, `BASE_DIR` and ports apply.

use std::{os::unix::process::ExitStatusExt, process::Stdio, time::Duration};

use bus_core::{command_fn, HandlerError, Handlers, MessageContext};
use bus_rabbitmq::RabbitWorker;
use marketplace::{commands::CreateOffer, config::WorkerConfig};
use serde_json::{json, Value};
use tokio::process::Command;
use uuid::Uuid;

use crate::broker::{run_to_success, LocalCluster, NodeFailure, NodePick, URLS_VAR};
use crate::harness::{self, Bus, Fault, Report, Scenario};

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

/// An API and two workers on the cluster under the 16-client load, the
/// node `pick` designates failing as `failure` mid-load and started again;
/// `None` (the test skips) without a cluster.
async fn node_failure(pool: sqlx::PgPool, failure: NodeFailure, pick: NodePick) -> Option<Report> {
    let cluster = cluster_or_skip()?;
    let _serial = harness::SERIAL.lock().await;
    let report = Scenario::on_broker(pool, cluster.broker(), 2)
        .await
        .run(Fault::ClusterNode {
            cluster,
            failure,
            pick,
        })
        .await;
    Some(report)
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
#[ignore = "kills a node of a local RabbitMQ cluster: FAULTS_CLUSTER_URLS, --ignored"]
async fn a_cluster_node_killed_mid_load_loses_no_200_and_applies_none_twice(pool: sqlx::PgPool) {
    let Some(report) = node_failure(pool, NodeFailure::Kill, NodePick::TheApis).await else {
        return;
    };
    assert_the_node_failure_lost_nothing(&report).await;
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
#[ignore = "stops a node of a local RabbitMQ cluster: FAULTS_CLUSTER_URLS, --ignored"]
async fn the_node_leading_most_queues_stopped_mid_load_loses_no_200_and_applies_none_twice(
    pool: sqlx::PgPool,
) {
    let Some(report) = node_failure(pool, NodeFailure::Stop, NodePick::MostLeaders).await else {
        return;
    };
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
    let mut list = Command::new(env!("CARGO_BIN_EXE_marketplace"));
    list.args([
        "dead-letters",
        "list",
        "--bus",
        "rabbitmq",
        "--group-by",
        "reason",
        "--json",
    ])
    .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
    .env("RUST_LOG", "error");
    let output = run_to_success(&mut list, "marketplace dead-letters list").await;
    let groups: Value = serde_json::from_str(&output).expect("JSON groups");
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
