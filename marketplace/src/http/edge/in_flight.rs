//! Load shedding: at most `--max-in-flight` requests are handled at once;
//! the next one is answered `503` (problem+json, `Retry-After`) at once
//! rather than queued, so a flood costs the server almost nothing and a
//! client never hangs waiting for a turn.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::sync::Semaphore;

use crate::http::error::ApiError;

/// The permits of requests in flight.
#[derive(Debug, Clone)]
pub struct InFlight {
    permits: Arc<Semaphore>,
}

impl InFlight {
    /// At most `max` requests at once (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
        }
    }
}

/// Whether requests to `path` are never shed: `/health/live` does no I/O,
/// and an orchestrator that saw it fail under load would restart a process
/// that is merely busy.
pub fn is_never_shed(path: &str) -> bool {
    path == "/health/live"
}

/// The middleware: a permit for the request's lifetime, or `503` (except
/// for the routes that are [never shed](is_never_shed)).
pub async fn limit(State(in_flight): State<InFlight>, request: Request, next: Next) -> Response {
    if is_never_shed(request.uri().path()) {
        return next.run(request).await;
    }
    match in_flight.permits.clone().try_acquire_owned() {
        Ok(permit) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        Err(_) => ApiError::Overloaded.into_response(),
    }
}
