//! `PUT /book`, `GET /books` (numbered or cursor pages, search), `GET /books/{id}`.

use axum::{
    extract::State,
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;

use super::{
    access::Caller,
    error::{ApiError, FieldError, Problem},
    extract::{IdPath, TraceParent, ValidJson, ValidQuery},
    paging::{self, Page},
    AppState,
};
use crate::{
    commands::SaveBook,
    model::{may_save_book, Book, BookKey, SearchTerms},
    queries::{GetBook, GetBookRegistration, ListBooks, ListBooksAfter},
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

/// Paging and search of `GET /books`.
#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct Pagination {
    /// Page number, from 1 (default 1). Not with `after`.
    #[validate(range(min = 1, max = 1_000_000))]
    #[param(minimum = 1, maximum = 1_000_000)]
    pub page: Option<u32>,
    /// Books per page, 1 to 100 (default 50).
    #[validate(range(min = 1, max = 100))]
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<u32>,
    /// Search: the books whose title and author hold every word of `q`
    /// (case and accents ignored, the last word as a prefix), best match
    /// first. 1 to 200 characters once trimmed, at most 8 words (runs of
    /// letters and digits; anything else only separates words).
    #[param(min_length = 1, max_length = 200)]
    pub q: Option<String>,
    /// Cursor mode: the `next` cursor of the previous page (empty: the
    /// first page). The answer is then an object `{"items", "next"}`.
    #[param(max_length = 512)]
    pub after: Option<String>,
}

/// The body of `GET /books`: the JSON array of a numbered page, or the
/// object of a cursor page (with `after`).
// Describes the two shapes in the OpenAPI document; the route builds them
// directly.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum BooksBody {
    /// Without `after`: the page's books.
    Books(Vec<Book>),
    /// With `after`: the page's books and the next page's cursor.
    Page(Page<Book>),
}

/// A page of the catalogue, in registration order, or of a search of it
/// (`q`), best match first; numbered pages (`page`) or cursor pages
/// (`after`).
#[utoipa::path(get, path = "/books", tag = "books", params(Pagination),
    responses(
        (status = 200, description = "Books. Without `after`: a JSON array (numbered pages). With `after` (empty for the first page): an object `{\"items\": [books], \"next\": cursor or null}`. When more books follow, `Link: <…>; rel=\"next\"` gives the next page's address (the same parameters, with `page` + 1, or with `after` = `next`).",
            body = BooksBody,
            headers(("Link" = String, description = "`</books?…>; rel=\"next\"`: the next page, when more books follow"))),
        (status = 400, description = "Malformed query string", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "page or pageSize out of range; q empty, over 200 characters, over 8 words or without a letter or digit; after not a cursor of this list (or of the other order: with or without q); page with after", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database does not answer right now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_books(
    State(state): State<AppState>,
    ValidQuery(paging): ValidQuery<Pagination>,
) -> Result<Response, ApiError> {
    let search = paging
        .q
        .as_deref()
        .map(SearchTerms::parse)
        .transpose()
        .map_err(|error| invalid("q", error.to_string()))?;
    let page_size = paging.page_size.unwrap_or(DEFAULT_BOOKS_PAGE);
    // The parameters every next page keeps, percent-encoded.
    let mut kept = format!("pageSize={page_size}");
    if let Some(q) = &paging.q {
        kept.push_str("&q=");
        kept.push_str(&paging::percent_encode(q.trim()));
    }
    let Some(after) = paging.after else {
        let page = paging.page.unwrap_or(1);
        let books = state
            .queries
            .ask(ListBooks {
                page,
                page_size,
                search,
            })
            .await?;
        let next = books
            .more
            .then(|| format!("/books?page={}&{kept}", page.saturating_add(1)));
        return Ok(paging::with_next_link(
            Json(books.books).into_response(),
            next.as_deref(),
        ));
    };
    if paging.page.is_some() {
        return Err(invalid(
            "page",
            "not with after: cursor pages follow `next`".to_owned(),
        ));
    }
    let after = match after.as_str() {
        "" => None,
        cursor => Some(paging::decode::<BookKey>(cursor)?),
    };
    let of_this_order = match (&after, &search) {
        (None, _) => true,
        (Some(BookKey::Ranked(..)), Some(_)) | (Some(BookKey::Registered(..)), None) => true,
        (Some(_), _) => false,
    };
    if !of_this_order {
        return Err(invalid(
            "after",
            "a cursor of a search goes with its q, a cursor of the catalogue without q".to_owned(),
        ));
    }
    let books = state
        .queries
        .ask(ListBooksAfter {
            after,
            page_size,
            search,
        })
        .await?;
    let page = Page {
        items: books.books,
        next: books.next.as_ref().map(paging::encode),
    };
    Ok(paging::page_response(page, "/books", &kept))
}

/// Books per page of `GET /books` when `pageSize` is not given.
pub const DEFAULT_BOOKS_PAGE: u32 = 50;

/// A `422` on `field`.
fn invalid(field: &str, message: String) -> ApiError {
    ApiError::Validation(vec![FieldError {
        field: field.to_owned(),
        message,
    }])
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
