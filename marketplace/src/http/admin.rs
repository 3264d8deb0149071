//! The admin routes of a worker's health port: pause and resume the
//! consumer of one queue without stopping the worker.
//!
//! | route | does |
//! |---|---|
//! | `GET /admin/queues` | every consumed queue: paused or not |
//! | `POST /admin/queues/{queue}/pause` | records the queue as paused and stops its consumer here |
//! | `POST /admin/queues/{queue}/resume` | records it as running and consumes it again here |
//!
//! While the database does not answer, every route is `503` (problem+json,
//! a fixed detail) and nothing changes.
//!
//! `{queue}` is the queue's name as the topology declares it (with the
//! namespace, e.g. `marketplace.command.CreateOrder`); a queue this worker
//! does not consume is `404`. Every route needs `Authorization: Bearer
//! <admin token>` (`--admin-token`), compared in constant time; a missing
//! or wrong token is `401`. Without a configured token the routes are not
//! mounted at all (`404`).
//!
//! The paused set is kept in the database (`bus_paused_queues`): the worker
//! that takes the request applies it at once, the others within
//! `--pause-poll-interval` ([`follow`]), and a restarted worker starts with
//! it.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{Path, Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use bus_core::{PausedQueues, PausedQueuesError};
use bus_rabbitmq::WorkerControl;
use serde::Serialize;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::{
    access::{bearer_token, Bearer},
    error::{ApiError, Challenge},
};

/// What the admin routes need.
#[derive(Clone)]
pub struct Admin {
    token: Arc<[u8]>,
    control: WorkerControl,
    store: PausedQueues,
    paused_by: Arc<str>,
}

impl Admin {
    /// Admin routes guarded by `token`, acting on `control` and recording
    /// in `store`; `paused_by` is what a pause records as its author.
    pub fn new(
        token: Vec<u8>,
        control: WorkerControl,
        store: PausedQueues,
        paused_by: &str,
    ) -> Self {
        Self {
            token: token.into(),
            control,
            store,
            paused_by: paused_by.into(),
        }
    }
}

/// The admin routes, each behind the token check.
pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/admin/queues", get(list))
        .route("/admin/queues/{queue}/pause", post(pause))
        .route("/admin/queues/{queue}/resume", post(resume))
        .route_layer(middleware::from_fn_with_state(admin.clone(), require_token))
        .with_state(admin)
}

/// `401` unless the request carries the admin token.
async fn require_token(State(admin): State<Admin>, request: Request, next: Next) -> Response {
    let challenge = match bearer_token(request.headers()) {
        Bearer::Absent => Some(Challenge::AdminTokenRequired),
        Bearer::Unreadable => Some(Challenge::InvalidAdminToken),
        Bearer::Token(token) => {
            // Constant time over the bytes (the length is not secret).
            let matches: bool = token.as_bytes().ct_eq(&admin.token).into();
            (!matches).then_some(Challenge::InvalidAdminToken)
        }
    };
    match challenge {
        Some(challenge) => {
            tracing::warn!("admin request refused: missing or wrong admin token");
            ApiError::Unauthorized(challenge).into_response()
        }
        None => next.run(request).await,
    }
}

/// One consumed queue.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueView {
    /// The queue's name, as the topology declares it.
    queue: String,
    /// Whether the queue is recorded as paused (what every worker converges on).
    paused: bool,
    /// Whether this worker consumes it right now.
    consuming: bool,
    /// When it was paused (RFC 3339), if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    paused_at: Option<String>,
    /// Who paused it, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    paused_by: Option<String>,
}

/// `GET /admin/queues`.
async fn list(State(admin): State<Admin>) -> Result<Json<serde_json::Value>, ApiError> {
    let recorded = admin.store.list().await.map_err(unavailable)?;
    let queues: Vec<QueueView> = admin
        .control
        .queues()
        .into_iter()
        .map(|state| {
            let record = recorded.iter().find(|paused| paused.queue == state.queue);
            QueueView {
                paused: record.is_some(),
                consuming: !state.paused,
                paused_at: record.map(|paused| paused.paused_at.to_rfc3339()),
                paused_by: record.and_then(|paused| paused.paused_by.clone()),
                queue: state.queue,
            }
        })
        .collect();
    Ok(Json(serde_json::json!({ "queues": queues })))
}

/// `POST /admin/queues/{queue}/pause`.
async fn pause(
    State(admin): State<Admin>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let queue = known(&admin, path)?;
    admin
        .store
        .pause(&queue, &admin.paused_by)
        .await
        .map_err(unavailable)?;
    if admin.control.pause(&queue).unwrap_or(false) {
        tracing::info!(%queue, "consumer paused by the admin API");
    }
    Ok(Json(serde_json::json!({ "queue": queue, "paused": true })))
}

/// `POST /admin/queues/{queue}/resume`.
async fn resume(
    State(admin): State<Admin>,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let queue = known(&admin, path)?;
    admin.store.resume(&queue).await.map_err(unavailable)?;
    if admin.control.resume(&queue).unwrap_or(false) {
        tracing::info!(%queue, "consumer resumed by the admin API");
    }
    Ok(Json(serde_json::json!({ "queue": queue, "paused": false })))
}

/// The queue of the path, if this worker consumes it; else `404`.
fn known(
    admin: &Admin,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<String, ApiError> {
    let Path(queue) = path?;
    if admin.control.consumes(&queue) {
        Ok(queue)
    } else {
        Err(ApiError::NotFound(
            "this worker consumes no queue of that name (see GET /admin/queues)".to_owned(),
        ))
    }
}

/// The paused set lives in the database: its failure is the database's,
/// answered `503` with a fixed detail (the cause is logged, never sent).
fn unavailable(error: PausedQueuesError) -> ApiError {
    ApiError::DatabaseUnavailable(error.to_string())
}

/// Applies the recorded paused set to `control` every `interval` until
/// `stop`, so that every worker sharing the database converges on it. A
/// failed read keeps the current set and is logged.
pub async fn follow(
    store: PausedQueues,
    control: WorkerControl,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match store.list().await {
            Ok(paused) => control.set_paused(paused.iter().map(|paused| paused.queue.as_str())),
            Err(error) => {
                tracing::warn!(%error, "cannot read the paused queues; keeping the current set")
            }
        }
    }
}
