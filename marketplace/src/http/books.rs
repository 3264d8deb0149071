//! `PUT /book`, `GET /books`, `GET /books/{id}`.

use axum::{extract::State, Json};
use serde::Deserialize;
use utoipa::IntoParams;
use validator::Validate;

use super::{
    access::Caller,
    error::{ApiError, Problem},
    extract::{IdPath, TraceParent, ValidJson, ValidQuery},
    AppState,
};
use crate::{
    commands::SaveBook,
    model::{may_save_book, Book},
    queries::{GetBook, GetBookRegistration, ListBooks},
};

/// Register a book or edit it.
///
/// With authentication on, any signed-in user registers a new book and
/// owns it; only its owner edits it. A book registered while
/// authentication was off has no owner: nobody edits it then.
#[utoipa::path(put, path = "/book", tag = "books", request_body = SaveBook,
    security((), ("bearerAuth" = [])),
    responses(
        (status = 200, description = "Accepted: the book will be saved"),
        (status = 400, description = "Malformed JSON or wrong types", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Authentication on: no bearer token, or a token refused (`WWW-Authenticate: Bearer realm=\"marketplace\"`, with `error=\"invalid_token\"` for a refused token)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Authentication on: the book exists and the signed-in user did not register it (not-the-owner)", body = Problem, content_type = "application/problem+json"),

        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is out of range, or a name, title or author holds a control character or a bidirectional override", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Cannot accept commands right now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn save_book(
    State(state): State<AppState>,
    caller: Caller,
    trace: TraceParent,
    ValidJson(mut command): ValidJson<SaveBook>,
) -> Result<(), ApiError> {
    // The sender comes from the token, never from the body.
    command.requested_by = caller.user();
    if let Some(user) = command.requested_by {
        // Checked here for a clear 403; the handler checks again in its
        // transaction, for two users registering the same new id at once.
        let stored = state.queries.ask(GetBookRegistration(command.id)).await?;
        may_save_book(command.id, stored, Some(user))
            .map_err(|refusal| ApiError::Forbidden(refusal.to_string()))?;
    }
    state.dispatch(&command, trace).await
}

/// Paging of `GET /books`.
#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct Pagination {
    /// Page number, from 1 (default 1).
    #[validate(range(min = 1, max = 1_000_000))]
    #[param(minimum = 1, maximum = 1_000_000)]
    pub page: Option<u32>,
    /// Books per page, 1 to 100 (default 50).
    #[validate(range(min = 1, max = 100))]
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<u32>,
}

/// A page of the catalogue, in registration order.
#[utoipa::path(get, path = "/books", tag = "books", params(Pagination),
    responses(
        (status = 200, description = "Books", body = [Book]),
        (status = 400, description = "Malformed query string", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "page or pageSize out of range", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database does not answer right now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_books(
    State(state): State<AppState>,
    ValidQuery(paging): ValidQuery<Pagination>,
) -> Result<Json<Vec<Book>>, ApiError> {
    let query = ListBooks {
        page: paging.page.unwrap_or(1),
        page_size: paging.page_size.unwrap_or(50),
    };
    Ok(Json(state.queries.ask(query).await?))
}

/// A book with its cheapest in-stock offer.
#[utoipa::path(get, path = "/books/{id}", tag = "books",
    params(("id" = uuid::Uuid, Path, description = "Book id")),
    responses(
        (status = 200, description = "The book", body = Book),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such book", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database does not answer right now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get_book(
    State(state): State<AppState>,
    IdPath(id): IdPath,
) -> Result<Json<Book>, ApiError> {
    state
        .queries
        .ask(GetBook(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("book {id} not found")))
}
