//! `PUT /user`, `GET /users/{id}`.

use axum::{extract::State, Json};

use super::{
    error::{ApiError, Problem},
    extract::{IdPath, TraceParent, ValidJson},
    AppState,
};
use crate::{commands::SaveUser, model::User, queries::GetUser};

/// Create or rename a user.
#[utoipa::path(put, path = "/user", tag = "users", request_body = SaveUser,
    responses(
        (status = 200, description = "Accepted: the user will be saved"),
        (status = 400, description = "Malformed JSON or wrong types", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is out of range, or a name, title or author holds a control character or a bidirectional override", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Cannot accept commands right now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn save_user(
    State(state): State<AppState>,
    trace: TraceParent,
    ValidJson(command): ValidJson<SaveUser>,
) -> Result<(), ApiError> {
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
