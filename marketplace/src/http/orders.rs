//! `POST /order`, `GET /orders/{id}`.

use axum::{extract::State, Json};

use super::{
    error::{ApiError, Problem},
    extract::{IdPath, TraceParent, ValidJson},
    AppState,
};
use crate::{commands::CreateOrder, model::Order, queries::GetOrder};

/// Buy copies from chosen offers, all or nothing.
#[utoipa::path(post, path = "/order", tag = "orders", request_body = CreateOrder,
    responses(
        (status = 200, description = "Accepted: follow it with GET /orders/{id}"),
        (status = 400, description = "Malformed JSON or wrong types", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is out of range, or a name, title or author holds a control character or a bidirectional override", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "In-memory sync bus only: the order id is taken by another payload (id-conflict)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Cannot accept commands right now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_order(
    State(state): State<AppState>,
    trace: TraceParent,
    ValidJson(command): ValidJson<CreateOrder>,
) -> Result<(), ApiError> {
    state.dispatch(&command, trace).await
}

/// An order: `pending`, `confirmed` or `rejected` (with a reason).
#[utoipa::path(get, path = "/orders/{id}", tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "Order id")),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order (yet)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database does not answer right now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_order(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> Result<Json<Order>, ApiError> {
    state
        .queries
        .ask(GetOrder(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("order {id} not found")))
}
