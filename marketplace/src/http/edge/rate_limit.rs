//! Per-client rate limits: a token bucket per client (GCRA, the `governor`
//! crate) of `--rate-limit-burst` requests refilled at
//! `--rate-limit-per-second`. A client is the signed-in user when the
//! request carries a verified [`Principal`] (the authentication layer runs
//! before this one), else its [`ClientIp`]: the peer's IP address, or the
//! one a trusted proxy forwarded (IPv6: its /64 prefix, which one
//! subscriber usually holds whole).
//!
//! Past the limit a request is answered `429` problem+json with
//! `Retry-After`; every limited answer carries the `RateLimit-Policy` and
//! `RateLimit` fields of draft-ietf-httpapi-ratelimit-headers (e.g.
//! `RateLimit-Policy: "per-client";q=200;w=2` and
//! `RateLimit: "per-client";r=57;t=2`). Probes and the OpenAPI document are
//! exempt ([`is_exempt`]).
//!
//! Memory stays bounded: the buckets of clients idle long enough to be full
//! again are dropped every [`CLEANUP_PERIOD`], so the map holds about the
//! clients seen in the last `burst / rate` seconds plus one period.

use std::{
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::{Request, State},
    http::{HeaderName, HeaderValue},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{
    clock::{Clock, MonotonicClock},
    middleware::StateInformationMiddleware,
    state::keyed::DashMapStateStore,
    Quota,
};
use uuid::Uuid;

use super::client_ip::ClientIp;
use crate::{auth::Principal, http::error::ApiError};

/// How often the buckets of idle clients are dropped.
pub const CLEANUP_PERIOD: Duration = Duration::from_secs(10);

/// The name of the policy in the `RateLimit*` fields.
const POLICY: &str = "per-client";

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers).
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Routes no client limit applies to: probes an orchestrator calls and
/// documents a client fetches once.
pub fn is_exempt(path: &str) -> bool {
    matches!(
        path,
        "/health/live" | "/health/ready" | "/openapi.json" | "/metrics"
    )
}

/// A client's allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per second, sustained.
    pub per_second: NonZeroU32,
    /// Requests at once above the rate (the bucket's size).
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// `per_second` with bursts of `burst`; `None` (no limit) if either is 0.
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        Some(Self {
            per_second: NonZeroU32::new(per_second)?,
            burst: NonZeroU32::new(burst)?,
        })
    }

    /// Seconds an empty bucket takes to fill again: the policy's window.
    fn window(&self) -> u64 {
        u64::from(self.burst.get()).div_ceil(u64::from(self.per_second.get()))
    }
}

/// Whom a bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ClientKey {
    User(Uuid),
    Address(IpAddr),
}

impl ClientKey {
    /// The principal if any, else the client's address (IPv6 as its /64).
    fn of(request: &Request) -> Option<Self> {
        if let Some(principal) = request.extensions().get::<Principal>() {
            return Some(Self::User(principal.user));
        }
        let ClientIp(client) = request.extensions().get::<ClientIp>()?;
        Some(Self::Address(match *client {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !((1u128 << 64) - 1))),
            },
            v4 => v4,
        }))
    }
}

type Buckets = governor::RateLimiter<
    ClientKey,
    DashMapStateStore<ClientKey>,
    MonotonicClock,
    StateInformationMiddleware,
>;

/// The buckets of every client, shared by the requests.
#[derive(Clone)]
pub struct RateLimiter {
    buckets: Arc<Buckets>,
    limit: RateLimit,
    policy: HeaderValue,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .field("clients", &self.buckets.len())
            .finish()
    }
}

impl RateLimiter {
    /// Buckets for `limit`; starts the task that drops idle clients' buckets
    /// (it ends when the limiter is dropped). Needs a Tokio runtime.
    pub fn new(limit: RateLimit) -> Self {
        let quota = Quota::per_second(limit.per_second).allow_burst(limit.burst);
        let buckets = Arc::new(Buckets::new(
            quota,
            DashMapStateStore::default(),
            MonotonicClock,
        ));
        let policy = HeaderValue::from_str(&format!(
            "\"{POLICY}\";q={};w={}",
            limit.burst,
            limit.window()
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("\"per-client\""));
        let weak = Arc::downgrade(&buckets);
        tokio::spawn(async move {
            let mut period = tokio::time::interval(CLEANUP_PERIOD);
            period.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                period.tick().await;
                let Some(buckets) = weak.upgrade() else { break };
                buckets.retain_recent();
                buckets.shrink_to_fit();
            }
        });
        Self {
            buckets,
            limit,
            policy,
        }
    }

    /// Clients holding a bucket now.
    pub fn clients(&self) -> usize {
        self.buckets.len()
    }

    fn service_limit(&self, remaining: u32, reset: u64) -> HeaderValue {
        HeaderValue::from_str(&format!("\"{POLICY}\";r={remaining};t={reset}"))
            .unwrap_or_else(|_| HeaderValue::from_static("\"per-client\";r=0"))
    }
}

/// The middleware: takes a token from the client's bucket, or answers `429`.
pub async fn limit(State(limiter): State<RateLimiter>, request: Request, next: Next) -> Response {
    if is_exempt(request.uri().path()) {
        return next.run(request).await;
    }
    // Without a client address (a router served by something else than
    // the API's own server) there is no one to hold to a rate.
    let Some(key) = ClientKey::of(&request) else {
        return next.run(request).await;
    };
    let rate = u64::from(limiter.limit.per_second.get());
    match limiter.buckets.check_key(&key) {
        Ok(snapshot) => {
            let remaining = snapshot.remaining_burst_capacity();
            let used = u64::from(limiter.limit.burst.get().saturating_sub(remaining));
            let mut response = next.run(request).await;
            let headers = response.headers_mut();
            headers.insert(RATELIMIT_POLICY.clone(), limiter.policy.clone());
            headers.insert(
                RATELIMIT.clone(),
                limiter.service_limit(remaining, used.div_ceil(rate)),
            );
            response
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(limiter.buckets.clock().now());
            let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let retry_after = retry_after.max(1);
            let mut response = ApiError::TooManyRequests { retry_after }.into_response();
            let headers = response.headers_mut();
            headers.insert(RATELIMIT_POLICY.clone(), limiter.policy.clone());
            headers.insert(RATELIMIT.clone(), limiter.service_limit(0, retry_after));
            response
        }
    }
}
