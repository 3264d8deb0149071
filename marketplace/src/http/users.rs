//! `PUT /user`, `GET /users/{id}`.

use axum::{extract::State, Json};

use super::{
    access::Caller,
    error::{ApiError, Problem},
    extract::{IdPath, TraceParent, ValidJson},
    AppState,
};
use crate::{commands::SaveUser, model::User, queries::GetUser};

/// Create or rename a user.
///
/// With authentication on, only the signed-in user saves itself: `id` must
/// be the token's subject.
#[utoipa::path(put, path = "/user", tag = "users", request_body = SaveUser,
    security((), ("bearerAuth" = [])),
    responses(
        (status = 200, description = "Accepted: the user will be saved"),
        (status = 400, description = "Malformed JSON or wrong types", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Authentication on: no bearer token, or a token refused (`WWW-Authenticate: Bearer realm=\"marketplace\"`, with `error=\"invalid_token\"` for a refused token)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Authentication on: `id` is not the signed-in user", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is out of range, or a name, title or author holds a control character or a bidirectional override", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Cannot accept commands right now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn save_user(
    State(state): State<AppState>,
    caller: Caller,
    trace: TraceParent,
    ValidJson(command): ValidJson<SaveUser>,
) -> Result<(), ApiError> {
    caller.must_be(
        command.id,
        "a signed-in user saves only itself: id must be the token's subject",
    )?;
    state.dispatch(&command, trace).await
}

/// A user.
#[utoipa::path(get, path = "/users/{id}", tag = "users",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database does not answer right now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_user(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> Result<Json<User>, ApiError> {
    state
        .queries
        .ask(GetUser(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("user {id} not found")))
}
