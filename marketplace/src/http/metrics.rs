//! Prometheus metrics: the process's one recorder, `GET /metrics`, and the
//! middleware that measures every HTTP request.
//!
//! Names follow the OpenTelemetry semantic conventions as Prometheus spells
//! them; the list, with labels, is in the marketplace README ("Metrics").
//! The bus records its own (`bus_core::metrics`) into the same recorder.

use std::{
    collections::HashSet,
    sync::{OnceLock, PoisonError, RwLock},
    time::Instant,
};

use axum::{
    extract::{MatchedPath, Request},
    http::{header, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram (seconds): HTTP requests, by `http_route` (the route
/// template), `http_request_method` and `http_response_status_code`.
pub const REQUEST_DURATION: &str = "http_server_request_duration_seconds";
/// Gauge: HTTP requests being served, by `http_request_method`.
pub const ACTIVE_REQUESTS: &str = "http_server_active_requests";
/// Gauge: outbox rows not yet relayed.
pub const OUTBOX_BACKLOG: &str = "marketplace_outbox_backlog_rows";
/// Gauge (seconds): age of the oldest outbox row not yet relayed.
pub const OUTBOX_OLDEST_AGE: &str = "marketplace_outbox_oldest_age_seconds";
/// Gauge: connections open in a database pool, by
/// `db_client_connection_pool_name` and `db_client_connection_state`
/// (`idle`, `used`). OpenTelemetry now calls it `db.client.connection.count`,
/// but a Prometheus name ending in `_count` is a histogram's (promtool
/// refuses it on a gauge): this keeps the convention's previous name.
pub const POOL_CONNECTIONS: &str = "db_client_connections_usage";
/// Gauge: the most connections a pool opens, by `db_client_connection_pool_name`.
pub const POOL_MAX: &str = "db_client_connection_max";
/// Histogram (seconds): how long a probe waited for a connection of a
/// saturated pool, by `db_client_connection_pool_name` (see
/// `startup::metrics`: one sample per pool every few seconds).
pub const POOL_WAIT: &str = "db_client_connection_wait_time_seconds";
/// Counter: queries and commands of the store that gave up waiting for a
/// pooled connection (the pool's acquire timeout).
pub use crate::store::POOL_TIMEOUTS;
/// Gauge: 1 while a worker's consumer of a queue is paused, by
/// `messaging_destination_name` (the queue) and `reason` (`operator`: the
/// admin API; `breaker`: every consumer waits for the database).
pub const CONSUMER_PAUSED: &str = "marketplace_consumer_paused";
/// Gauge: messages ready in a RabbitMQ queue, by `messaging_destination_name`
/// (the queue) and `queue_kind` (`command`, `event`, `dead_letter`).
pub const QUEUE_DEPTH: &str = "marketplace_queue_messages";

/// The `http_route` of a request no route matched: never the raw path,
/// whose values are unbounded.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Request durations, from 5 ms to 10 s (the OpenTelemetry defaults).
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Critical times, which include retries and backlogs: up to an hour.
const CRITICAL_TIME_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed as the global `metrics`
/// recorder on the first call. If another recorder was installed first,
/// the handle renders nothing and a warning says why.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(DURATION_BUCKETS)
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full(bus_core::metrics::CRITICAL_TIME.to_owned()),
                    CRITICAL_TIME_BUCKETS,
                )
            });
        let recorder = match builder {
            Ok(builder) => builder.build_recorder(),
            // Only an empty bucket list is refused; ours are constants.
            Err(error) => {
                tracing::warn!(%error, "metrics: default buckets");
                PrometheusBuilder::new().build_recorder()
            }
        };
        let handle = recorder.handle();
        if let Err(error) = metrics::set_global_recorder(recorder) {
            tracing::warn!(%error, "metrics: another recorder is installed; /metrics stays empty");
        }
        describe();
        // Exported as 0 from the start, not only after the first timeout.
        metrics::counter!(POOL_TIMEOUTS).increment(0);
        handle
    })
}

/// The HELP lines.
fn describe() {
    use bus_core::metrics as bus;
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Duration of HTTP server requests."
    );
    describe_gauge!(ACTIVE_REQUESTS, "HTTP server requests being served.");
    describe_counter!(bus::SENT_MESSAGES, "Messages handed to the bus.");
    describe_counter!(bus::CONSUMED_MESSAGES, "Deliveries a handler ran on.");
    describe_histogram!(
        bus::OPERATION_DURATION,
        Unit::Seconds,
        "Duration of a publish until the broker confirmed it."
    );
    describe_histogram!(
        bus::PROCESS_DURATION,
        Unit::Seconds,
        "Duration of a handler run, by how its delivery was settled."
    );
    describe_histogram!(
        bus::CRITICAL_TIME,
        Unit::Seconds,
        "From the message's creation to its handler's success."
    );
    describe_gauge!(OUTBOX_BACKLOG, "Outbox rows not yet relayed.");
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        Unit::Seconds,
        "Age of the oldest outbox row not yet relayed."
    );
    describe_gauge!(
        POOL_CONNECTIONS,
        "Database pool connections, by state (idle, used)."
    );
    describe_gauge!(POOL_MAX, "The most connections a database pool opens.");
    describe_histogram!(
        POOL_WAIT,
        Unit::Seconds,
        "Wait of a probe for a connection of the database pool."
    );
    describe_counter!(
        POOL_TIMEOUTS,
        "Acquires that gave up waiting for a database connection."
    );
    describe_gauge!(
        CONSUMER_PAUSED,
        "1 while the consumer of a queue is paused, by reason (operator, breaker)."
    );
    describe_gauge!(QUEUE_DEPTH, "Messages ready in a RabbitMQ queue.");
}

/// `GET /metrics`: the Prometheus text format, version 0.0.4.
pub async fn render() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle().render(),
    )
        .into_response()
}

/// Measures one request: active while it runs, then its duration by route
/// template, method and status.
pub async fn measure(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, |path| intern(path.as_str()));
    let active = metrics::gauge!(ACTIVE_REQUESTS, "http_request_method" => method);
    active.increment(1.0);
    // Decremented even when the client goes away mid-request.
    let _active = ActiveGuard(active);
    let response = next.run(request).await;
    metrics::histogram!(
        REQUEST_DURATION,
        "http_route" => route,
        "http_request_method" => method,
        "http_response_status_code" => intern(response.status().as_str()),
    )
    .record(started.elapsed().as_secs_f64());
    response
}

struct ActiveGuard(metrics::Gauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// The method as a label: the known ones, else `_OTHER` (OpenTelemetry's
/// value for methods outside the standard set).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "_OTHER",
    }
}

/// A `'static` copy of `text`, made once per distinct value. Only route
/// templates and status codes come here: a bounded set.
fn intern(text: &str) -> &'static str {
    static SEEN: OnceLock<RwLock<HashSet<&'static str>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if let Some(known) = seen
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(text)
    {
        return known;
    }
    let mut seen = seen.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = seen.get(text) {
        return known;
    }
    let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
    seen.insert(leaked);
    leaked
}
