//! `POST /order`, `GET /orders/{id}`.

use axum::{extract::State, Json};

use super::{
    access::Caller,
    error::{ApiError, Problem},
    extract::{IdPath, TraceParent, ValidJson},
    AppState,
};
use crate::{commands::CreateOrder, model::Order, queries::GetOrder};

/// Buy copies from chosen offers, all or nothing.
///
/// With authentication on, a user buys only as itself: `userId` must be the
/// token's subject.
#[utoipa::path(post, path = "/order", tag = "orders", request_body = CreateOrder,
    security((), ("bearerAuth" = [])),
    responses(
        (status = 200, description = "Accepted: follow it with GET /orders/{id}"),
        (status = 400, description = "Malformed JSON or wrong types", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Authentication on: no bearer token, or a token refused (`WWW-Authenticate: Bearer realm=\"marketplace\"`, with `error=\"invalid_token\"` for a refused token)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Authentication on: `userId` is not the signed-in user", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is out of range, or a name, title or author holds a control character or a bidirectional override", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "In-memory sync bus only: the order id is taken by another payload (id-conflict)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Cannot accept commands right now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_order(
    State(state): State<AppState>,
    caller: Caller,
    trace: TraceParent,
    ValidJson(command): ValidJson<CreateOrder>,
) -> Result<(), ApiError> {
    caller.must_be(
        command.user_id,
        "a signed-in user orders only as itself: userId must be the token's subject",
    )?;
    state.dispatch(&command, trace).await
}

/// An order: `pending`, `confirmed` or `rejected` (with a reason).
///
/// With authentication on, only its buyer reads it: to anyone else it is
/// `404`, as an order that does not exist.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "Order id")),
    security((), ("bearerAuth" = [])),
    responses(
        (status = 200, description = "The order", body = Order),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Authentication on: no bearer token, or a token refused (`WWW-Authenticate: Bearer realm=\"marketplace\"`, with `error=\"invalid_token\"` for a refused token)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order (yet), or, authentication on, another user's order", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database does not answer right now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> Result<Json<Order>, ApiError> {
    state
        .queries
        .ask(GetOrder(id))
        .await?
        // Another user's order is answered as one that does not exist, so
        // order ids cannot be probed.
        .filter(|order| caller.is(order.user_id))
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("order {id} not found")))
}
