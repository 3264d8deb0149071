//! `GET /metrics` after a scripted scenario, on every bus and store.
//!
//! The `metrics` recorder is global to the process, so this binary has its
//! own process and its scenarios take turns ([`TURN`]): each one compares
//! the counters before and after, and no other test adds to them meanwhile.

#[allow(dead_code, unused_macros)]
#[path = "../api/helpers.rs"]
mod helpers;

use std::collections::BTreeMap;

use helpers::{spawn, TestApp, TestDb};
use marketplace::config::BusKind;
use sqlx::PgPool;
use uuid::Uuid;

/// One scenario at a time in this process.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Two attempts: the offer for a missing book is dead-lettered quickly.
const FEW_RETRIES: &[&str] = &["--retry-max-attempts", "2"];

/// The samples of one scrape, by series (`name{labels}`, as rendered).
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    async fn of(app: &TestApp, base: &str) -> Self {
        let response = app
            .client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), 200);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = response.text().await.expect("metrics text");
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect();
        Self(samples)
    }

    /// The sum over the series of `name` carrying every label of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(series, _)| {
                let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
                series_name == name
                    && labels
                        .iter()
                        .all(|(key, value)| rest.contains(&format!("{key}=\"{value}\"")))
            })
            .map(|(_, value)| value)
            .sum()
    }
}

const REQUESTS: &str = "http_server_request_duration_seconds_count";
const PROCESSED: &str = "messaging_process_duration_seconds_count";
const CONSUMED: &str = "messaging_client_consumed_messages_total";

fn requests(
    route: &'static str,
    method: &'static str,
    status: &'static str,
) -> [(&'static str, &'static str); 3] {
    [
        ("http_route", route),
        ("http_request_method", method),
        ("http_response_status_code", status),
    ]
}

fn handled(message_type: &'static str, outcome: &'static str) -> [(&'static str, &'static str); 2] {
    [
        ("messaging_destination_name", message_type),
        ("outcome", outcome),
    ]
}

async fn scenario(app: &TestApp) {
    let _turn = TURN.lock().await;
    let before = Scrape::of(app, &app.address).await;

    let seeded = app.seed_offer(12.5, 3).await;
    let order = Uuid::new_v4();
    assert_eq!(
        app.post_order(order, seeded.user, &[(seeded.offer, 1)])
            .await
            .status(),
        200
    );
    app.settled_order(order).await;
    assert_eq!(app.get("/no/such/route").await.status(), 404);
    // An offer for a book that does not exist: refused by its handler
    // (at once on the synchronous bus), dead-lettered elsewhere.
    let _ = app
        .post_offer(Uuid::new_v4(), Uuid::new_v4(), seeded.user, 7.5, 1)
        .await;

    let dead_lettered = handled("marketplace.CreateOffer", "dead_letter");
    let after = app
        .eventually(|| async {
            let now = Scrape::of(app, &app.address).await;
            (now.sum(PROCESSED, &dead_lettered) > before.sum(PROCESSED, &dead_lettered))
                .then_some(now)
        })
        .await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.sum(name, labels) - before.sum(name, labels);

    assert_eq!(delta(REQUESTS, &requests("/user", "PUT", "200")), 1.0);
    assert_eq!(delta(REQUESTS, &requests("/book", "PUT", "200")), 1.0);
    assert_eq!(delta(REQUESTS, &requests("/order", "POST", "200")), 1.0);
    assert!(delta(REQUESTS, &requests("/books/{id}", "GET", "200")) >= 1.0);
    assert!(delta(REQUESTS, &requests("/orders/{id}", "GET", "200")) >= 1.0);
    assert_eq!(delta(REQUESTS, &requests("unmatched", "GET", "404")), 1.0);
    assert!(
        !after
            .0
            .keys()
            .any(|series| series.contains("/no/such/route")),
        "raw paths are never labels"
    );
    for message_type in [
        "marketplace.SaveUser",
        "marketplace.SaveBook",
        "marketplace.CreateOrder",
    ] {
        assert_eq!(
            delta(PROCESSED, &handled(message_type, "ack")),
            1.0,
            "{message_type}"
        );
        assert_eq!(
            delta(CONSUMED, &[("messaging_destination_name", message_type)]),
            1.0,
            "{message_type}"
        );
    }
    assert_eq!(
        delta(PROCESSED, &handled("marketplace.CreateOffer", "ack")),
        1.0
    );
    assert_eq!(delta(PROCESSED, &dead_lettered), 1.0);
    assert!(
        delta(
            "marketplace_critical_time_seconds_count",
            &[("messaging_destination_name", "marketplace.CreateOrder")]
        ) >= 1.0
    );
    if let Some(worker) = app.worker_health_address() {
        let published = [
            ("messaging_destination_name", "marketplace.CreateOrder"),
            ("outcome", "sent"),
        ];
        assert_eq!(
            delta("messaging_client_sent_messages_total", &published),
            1.0
        );
        let from_worker = Scrape::of(app, &format!("http://{worker}")).await;
        assert!(from_worker.sum(PROCESSED, &dead_lettered) >= 1.0);
    }
}

async fn run(db: TestDb, bus: BusKind) {
    let app = spawn(db, bus, FEW_RETRIES).await;
    scenario(&app).await;
    app.shutdown().await;
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn on_the_in_memory_bus(pool: PgPool) {
    run(TestDb::Postgres(pool), BusKind::InMemory).await
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn on_the_in_memory_async_bus(pool: PgPool) {
    run(TestDb::Postgres(pool), BusKind::InMemoryAsync).await
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn on_the_durable_bus(pool: PgPool) {
    run(TestDb::Postgres(pool), BusKind::Durable).await
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn on_rabbitmq(pool: PgPool) {
    run(TestDb::Postgres(pool), BusKind::Rabbitmq).await
}

#[tokio::test]
async fn on_sqlite_with_the_in_memory_bus() {
    run(TestDb::sqlite().await, BusKind::InMemory).await
}

#[tokio::test]
async fn on_sqlite_with_the_in_memory_async_bus() {
    run(TestDb::sqlite().await, BusKind::InMemoryAsync).await
}

#[tokio::test]
async fn on_sqlite_with_the_durable_bus() {
    run(TestDb::sqlite().await, BusKind::Durable).await
}
