//! Faults under load: real `marketplace serve` and `marketplace worker`
//! processes, a real broker, a real database. Most scenarios run the
//! RabbitMQ bus; `api_crash.rs` kills the API itself on the durable bus
//! (the default configuration, and PostgreSQL with two API processes);
//! `cluster.rs` kills or stops a node of a three-node RabbitMQ cluster with
//! quorum queues, and crashes a worker on every delivery of one command.
//!
//! Each scenario sends a stream of one-copy orders against offers with
//! plenty of stock, injects a fault, and then checks the two numbers that
//! matter: every order answered `200` is applied (0 lost), and the stock
//! claimed equals the number of confirmed orders (0 applied twice).
//!
//! They are ignored by a plain `cargo test`: one stops and starts the local
//! broker, and all of them drive real processes under load for minutes. Run
//! them on purpose, one at a time:
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo test -p marketplace --all-features --test faults -- --ignored --test-threads=1
//! ```
//!
//! The database outage scenarios stop a PostgreSQL cluster of their own,
//! never the one at `DATABASE_URL`: `private-postgres.sh` (beside this file)
//! creates a throwaway cluster on another port, runs the command it is given
//! with `FAULTS_PG_URL` and `FAULTS_PG_CLUSTER` pointing at it, then drops it:
//!
//! ```text
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     marketplace/tests/faults/private-postgres.sh \
//!     cargo test -p marketplace --all-features --test faults -- --ignored --test-threads=1
//! ```
//!
//! The node failures (`cluster.rs`) run on a three-node RabbitMQ cluster
//! with quorum queues, the local one of `deploy/local-rabbitmq-cluster.sh`
//! (as root: the script kills, stops and starts its nodes). They skip,
//! saying so, unless `FAULTS_CLUSTER_URLS` holds the cluster's AMQP URLs
//! as `start` prints them; a cluster started with another `CLUSTER_NAME`
//! (or `BASE_DIR`, ports) needs the same variables here:
//!
//! ```text
//! sudo bash deploy/local-rabbitmq-cluster.sh start
//! FAULTS_CLUSTER_URLS=amqp://guest:guest@127.0.0.1:5681/%2f,amqp://guest:guest@127.0.0.1:5682/%2f,amqp://guest:guest@127.0.0.1:5683/%2f \
//!     DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo test -p marketplace --all-features --test faults -- --ignored --test-threads=1 cluster::
//! sudo bash deploy/local-rabbitmq-cluster.sh stop
//! ```

mod api_crash;
mod broker;
mod cluster;
mod harness;

use std::time::Duration;

use api_crash::{kill_the_api_mid_load, CrashDb};
use harness::{Bus, Fault, Report, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fault test with real processes under load: run with --ignored"]
async fn the_api_killed_mid_load_on_the_default_configuration_applies_every_200_after_restart() {
    let _serial = harness::SERIAL.lock().await;
    kill_the_api_mid_load(CrashDb::sqlite().await, 1)
        .await
        .assert_every_200_applied();
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
#[ignore = "fault test with real processes under load: run with --ignored"]
async fn one_of_two_apis_on_postgres_killed_mid_load_on_the_durable_bus_loses_no_200(
    pool: sqlx::PgPool,
) {
    let _serial = harness::SERIAL.lock().await;
    kill_the_api_mid_load(CrashDb::postgres(pool), 2)
        .await
        .assert_every_200_applied();
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
#[ignore = "stops the local RabbitMQ broker: run with --ignored"]
async fn a_broker_restart_mid_load_loses_nothing_and_answers_503_meanwhile(pool: sqlx::PgPool) {
    let _serial = harness::SERIAL.lock().await;
    let report = Scenario::new(pool, 1)
        .await
        .run(Fault::BrokerRestart {
            down_for: Duration::from_secs(4),
        })
        .await;
    report.assert_nothing_lost_nothing_doubled().await;
    assert!(
        report.unavailable > 0,
        "the API answered 503 while the broker was down: {report:?}"
    );
    assert_eq!(report.other_errors, 0, "only 200 or 503: {report:?}");
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
#[ignore = "fault test with real processes under load: run with --ignored"]
async fn a_worker_killed_mid_load_and_restarted_loses_nothing(pool: sqlx::PgPool) {
    let _serial = harness::SERIAL.lock().await;
    let report = Scenario::new(pool, 1).await.run(Fault::KillWorker).await;
    report.assert_nothing_lost_nothing_doubled().await;
    assert_eq!(report.unavailable + report.other_errors, 0, "{report:?}");
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
#[ignore = "fault test with real processes under load: run with --ignored"]
async fn two_workers_consuming_at_once_apply_each_order_once(pool: sqlx::PgPool) {
    let _serial = harness::SERIAL.lock().await;
    let report = Scenario::new(pool, 2).await.run(Fault::None).await;
    report.assert_nothing_lost_nothing_doubled().await;
    assert_eq!(report.unavailable + report.other_errors, 0, "{report:?}");
}

/// The guarantees of a database outage: every write answered `200` applied
/// once, none dead-lettered, and only `200` or `503` answered.
async fn assert_database_outage_lost_nothing(report: &Report) {
    report.assert_nothing_lost_nothing_doubled().await;
    assert_eq!(report.dead_letters, 0, "nothing dead-lettered: {report:?}");
    assert_eq!(report.other_errors, 0, "only 200 or 503: {report:?}");
}

/// A 20 s outage outlasts both what a failed message could spend retrying
/// (8 attempts from 100 ms doubling: 12.7 s of backoff at the defaults) and
/// the breaker's longest probe interval (5 s): a longer one adds only
/// orders to drain, not a new path.
async fn database_outage_with_rabbitmq(down_for: Duration) {
    let _serial = harness::SERIAL.lock().await;
    let report = Scenario::on_private_postgres(Bus::Rabbitmq, 2)
        .await
        .run(Fault::DatabaseOutage { down_for })
        .await;
    assert_database_outage_lost_nothing(&report).await;
    let (status, body) = report
        .readiness_during_outage
        .clone()
        .expect("a worker's readiness answered during the outage");
    assert_eq!(
        status, 503,
        "a worker is not ready while the database is away: {body}"
    );
}

#[tokio::test]
#[ignore = "stops a private PostgreSQL cluster: run through private-postgres.sh with --ignored"]
async fn postgres_stopped_20_s_mid_load_with_two_rabbitmq_workers_loses_nothing_and_dead_letters_nothing(
) {
    database_outage_with_rabbitmq(Duration::from_secs(20)).await;
}

#[tokio::test]
#[ignore = "stops a private PostgreSQL cluster: run through private-postgres.sh with --ignored"]
async fn postgres_stopped_20_s_mid_load_on_the_async_bus_loses_nothing_and_dead_letters_nothing() {
    let _serial = harness::SERIAL.lock().await;
    let report = Scenario::on_private_postgres(Bus::InMemoryAsync, 0)
        .await
        .run(Fault::DatabaseOutage {
            down_for: Duration::from_secs(20),
        })
        .await;
    assert_database_outage_lost_nothing(&report).await;
}
