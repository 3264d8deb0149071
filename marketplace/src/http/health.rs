//! `GET /health/live`, `GET /health/ready`.

use std::time::Duration;

use axum::{extract::State, Json};
use serde_json::{json, Value};

use super::{error::ApiError, AppState};

/// How long a readiness probe waits for a dependency.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `200` while the process runs.
#[utoipa::path(get, path = "/health/live", tag = "operations",
    responses((status = 200, description = "The process is running")))]
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `200` when the database (and the broker, when used) answer, else `503`.
/// The body says whether requests are authenticated: `"auth": "on"`, or
/// `"off"` in open mode (and on a worker, which serves no API). A worker
/// also lists the queues whose consumers are paused (`"pausedQueues"`):
/// a paused consumer is intentional, so the worker stays ready.
#[utoipa::path(get, path = "/health/ready", tag = "operations",
    responses(
        (status = 200, description = "Dependencies answer: `{\"status\": \"ready\", \"auth\": \"on\" | \"off\"}` (a worker adds `\"pausedQueues\": [...]`)"),
        (status = 503, description = "A dependency does not answer", body = super::error::Problem, content_type = "application/problem+json"),
    ))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.database.ping().await.map_err(ApiError::Unavailable)?;
    for check in state.readiness.iter() {
        match tokio::time::timeout(PROBE_TIMEOUT, check()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(ApiError::Unavailable(error)),
            Err(_) => {
                return Err(ApiError::Unavailable(
                    "dependency: no answer in time".to_owned(),
                ))
            }
        }
    }
    let mut body = json!({ "status": "ready", "auth": state.auth.state() });
    if let Some(consumers) = &state.consumers {
        body["pausedQueues"] = json!(consumers.paused());
    }
    Ok(Json(body))
}
