//! The HTTP edge: what every request passes before a route sees it, so the
//! API holds under abuse (OWASP API4, unrestricted resource consumption):
//!
//! | layer (outermost first) | what it bounds | answer past it |
//! |---|---|---|
//! | [`request_id`] | — (every answer carries `x-request-id`, every log line of the request its `request_id`) | — |
//! | [`trace`] | — (the request's W3C trace: every log line of the request, and the commands it sends, carry its `trace_id`) | — |
//! | [`client_ip`] | — (the client's address, seen through trusted proxies, `--trusted-proxies`: the request's `client_ip`) | — |
//! | [`caching`] | — (`ETag` and `Cache-Control` on every `200` of a `GET`, `304` to a matching `If-None-Match`, `no-store` on errors) | `304` |
//! | [`in_flight`] | requests handled at once (`--max-in-flight`) | `503` at once |
//! | (authentication, when configured) | | |
//! | [`rate_limit`] | requests per client (`--rate-limit-per-second`, `--rate-limit-burst`) | `429` |
//! | [`request_timeout`] | a request's duration (`--request-timeout`) | `503` |
//!
//! Connections themselves (header-read and idle timeouts, their number) are
//! bounded where they are accepted, in `startup/connections.rs`; a read's
//! SQL statement by PostgreSQL's `statement_timeout` (`store/database.rs`).

pub mod caching;
pub mod client_ip;
pub mod in_flight;
pub mod openapi;
pub mod rate_limit;
pub mod request_id;
pub mod trace;

use std::time::Duration;

use axum::{extract::Request, middleware::Next, response::Response};

pub use self::client_ip::{ClientIp, TrustedProxies};
pub use self::in_flight::InFlight;
pub use self::rate_limit::{RateLimit, RateLimiter};
pub use self::request_id::REQUEST_ID;
pub use self::trace::RequestTrace;
use super::error::ApiError;

/// What the edge lets through, from the `serve` flags.
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    /// Requests handled at once, at most.
    pub max_in_flight: usize,
    /// Requests per client, or `None` for no rate limit.
    pub rate_limit: Option<RateLimit>,
    /// Longest a request may take.
    pub request_timeout: Duration,
    /// The reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
}

impl Default for EdgeLimits {
    /// The defaults of the `serve` flags.
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            rate_limit: RateLimit::new(100, 200),
            request_timeout: Duration::from_secs(10),
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// Answers `503` problem+json (with `Retry-After`) when the request takes
/// longer than `timeout`; the handler's future is dropped, which releases
/// what it held (its database connection, its in-flight permit).
pub async fn request_timeout(timeout: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => axum::response::IntoResponse::into_response(ApiError::Timeout),
    }
}
