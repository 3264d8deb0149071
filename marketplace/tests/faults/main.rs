//! Faults under load with the RabbitMQ bus: real `marketplace serve` and
//! `marketplace worker` processes, a real broker, a real database.
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

mod harness;

use std::time::Duration;

use harness::{Fault, Scenario};

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
