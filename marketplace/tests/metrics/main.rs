//! `GET /metrics` after a scripted scenario, on every bus and store.
//!
//! The `metrics` recorder is global to the process, so this binary has its
//! own process and its scenarios take turns ([`TURN`]): each one compares
//! the counters before and after, and no other test adds to them meanwhile.

#[allow(dead_code, unused_macros)]
#[path = "../api/helpers.rs"]
mod helpers;

use std::collections::BTreeMap;

use helpers::{header, spawn, TestApp, TestDb};
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
        let content_type = header(&response, "content-type");
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

    /// Whether a series of `name` carries every label of `labels`.
    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.0.keys().any(|series| {
            let (series_name, rest) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(key, value)| rest.contains(&format!("{key}=\"{value}\"")))
        })
    }
}

const POOL_CONNECTIONS: &str = "db_client_connections_usage";
const POOL_MAX: &str = "db_client_connection_max";
const POOL_WAITS: &str = "db_client_connection_wait_time_seconds_count";
const POOL_WAITED: &str = "db_client_connection_wait_time_seconds_sum";
const POOL_TIMEOUTS: &str = "db_client_connection_timeouts_total";
const CONSUMER_PAUSED: &str = "marketplace_consumer_paused";

/// The pools of the app's database, by the name its metrics give them.
fn pools(app: &TestApp) -> &'static [&'static str] {
    match app.db {
        Some(TestDb::Sqlite { .. }) => &["writer", "reader"],
        _ => &["main"],
    }
}

/// Every pool shows its connections by state, its maximum and its probed
/// waits; the timeouts counter is there before the first timeout.
fn assert_pool_metrics(app: &TestApp, scrape: &Scrape) {
    for pool in pools(app) {
        let named = ("db_client_connection_pool_name", *pool);
        for state in ["idle", "used"] {
            assert!(
                scrape.has(
                    POOL_CONNECTIONS,
                    &[named, ("db_client_connection_state", state)]
                ),
                "{pool} {state}"
            );
        }
        assert!(scrape.sum(POOL_CONNECTIONS, &[named]) >= 1.0, "{pool}");
        assert!(scrape.sum(POOL_MAX, &[named]) >= 1.0, "{pool}");
        assert!(scrape.sum(POOL_WAITS, &[named]) >= 1.0, "{pool}");
    }
    assert!(scrape.has(POOL_TIMEOUTS, &[]));
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
    // Sampled every 5 s: the first sample is taken at start.
    assert_pool_metrics(app, &after);
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
        assert_pool_metrics(app, &from_worker);
        // Every consumed queue has both pause gauges, and none is paused.
        for reason in ["operator", "breaker"] {
            assert!(from_worker.has(CONSUMER_PAUSED, &[("reason", reason)]));
            assert_eq!(from_worker.sum(CONSUMER_PAUSED, &[("reason", reason)]), 0.0);
        }
    }
}

async fn run(db: TestDb, bus: BusKind) {
    let app = spawn(db, bus, FEW_RETRIES).await;
    scenario(&app).await;
    app.shutdown().await;
}

crate::tests_on_every_bus!(run);

/// A queue paused through the admin API shows as paused (by an operator)
/// on the worker's `/metrics` until it is resumed.
#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn a_paused_consumer_shows_on_the_worker(pool: PgPool) {
    const TOKEN: &str = "an-admin-token-for-the-metrics";
    let app = spawn(
        TestDb::Postgres(pool),
        BusKind::Rabbitmq,
        &["--admin-token", TOKEN],
    )
    .await;
    let worker = format!("http://{}", app.worker_health_address().expect("a worker"));
    let _turn = TURN.lock().await;
    let queue = format!("{}.command.marketplace.SaveUser", app.namespace);
    let paused = |value: f64| {
        let (app, worker, queue) = (&app, &worker, &queue);
        async move {
            let scrape = Scrape::of(app, worker).await;
            let labels = [
                ("messaging_destination_name", queue.as_str()),
                ("reason", "operator"),
            ];
            (scrape.has(CONSUMER_PAUSED, &labels) && scrape.sum(CONSUMER_PAUSED, &labels) == value)
                .then_some(scrape)
        }
    };
    let admin = |action: &'static str| {
        app.client
            .post(format!("{worker}/admin/queues/{queue}/{action}"))
            .bearer_auth(TOKEN)
            .send()
    };
    app.eventually(|| paused(0.0)).await;

    assert_eq!(admin("pause").await.expect("pause").status(), 200);
    let scrape = app.eventually(|| paused(1.0)).await;
    // Only that queue, and not by the breaker.
    assert_eq!(scrape.sum(CONSUMER_PAUSED, &[("reason", "operator")]), 1.0);
    assert_eq!(scrape.sum(CONSUMER_PAUSED, &[("reason", "breaker")]), 0.0);

    assert_eq!(admin("resume").await.expect("resume").status(), 200);
    app.eventually(|| paused(0.0)).await;
    app.shutdown().await;
}

/// With every connection of the pool taken, the probe waits for one: the
/// wait shows in `db_client_connection_wait_time_seconds`.
#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn a_saturated_pool_shows_its_waits(pool: PgPool) {
    let app = spawn(TestDb::Postgres(pool.clone()), BusKind::InMemory, &[]).await;
    let _turn = TURN.lock().await;
    let main = [("db_client_connection_pool_name", "main")];
    let before = Scrape::of(&app, &app.address).await;

    let mut taken = Vec::new();
    for _ in 0..pool.options().get_max_connections() {
        taken.push(pool.acquire().await.expect("a connection"));
    }
    // The other apps of this process record into the same series (their
    // own pool is called `main` too), but their waits are zero: only this
    // pool's probe adds seconds.
    app.eventually(|| async {
        let now = Scrape::of(&app, &app.address).await;
        (now.sum(POOL_WAITED, &main) - before.sum(POOL_WAITED, &main) >= 1.0).then_some(())
    })
    .await;
    drop(taken);
    app.shutdown().await;
}
