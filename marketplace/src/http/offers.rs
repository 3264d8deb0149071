//! `POST /offer`, `GET /offers/{bookId}`.

use axum::{
    extract::State,
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
    Json,
};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;
use validator::Validate;

use super::{
    access::Caller,
    error::{ApiError, Problem},
    extract::{IdPath, TraceParent, ValidJson, ValidQuery},
    AppState,
};
use crate::{commands::CreateOffer, model::Offer, queries::ListOffers};

/// Offers per page of `GET /offers/{bookId}` when `limit` is not given.
pub const DEFAULT_OFFERS_PAGE: u32 = 100;

/// Most offers per page of `GET /offers/{bookId}`.
pub const MAX_OFFERS_PAGE: u32 = 1000;

/// Put copies of a book on sale.
///
/// With authentication on, a user sells only as itself: `sellerId` must be
/// the token's subject.
#[utoipa::path(post, path = "/offer", tag = "offers", request_body = CreateOffer,
    security((), ("bearerAuth" = [])),
    responses(
        (status = 200, description = "Accepted: the offer will be listed once its book and seller exist"),
        (status = 400, description = "Malformed JSON or wrong types", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Authentication on: no bearer token, or a token refused (`WWW-Authenticate: Bearer realm=\"marketplace\"`, with `error=\"invalid_token\"` for a refused token)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Authentication on: `sellerId` is not the signed-in user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "In-memory sync bus only: the book or seller does not exist, or the offer id is taken by another payload (id-conflict)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is out of range, or a name, title or author holds a control character or a bidirectional override", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Cannot accept commands right now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_offer(
    State(state): State<AppState>,
    caller: Caller,
    trace: TraceParent,
    ValidJson(command): ValidJson<CreateOffer>,
) -> Result<(), ApiError> {
    caller.must_be(
        command.seller_id,
        "a signed-in user sells only as itself: sellerId must be the token's subject",
    )?;
    state.dispatch(&command, trace).await
}

/// Paging of `GET /offers/{bookId}` (keyset: a page starts after the last
/// offer of the previous one, so pages neither skip nor repeat offers).
#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct OffersPaging {
    /// Offers per page, 1 to 1000 (default 100).
    #[validate(range(min = 1, max = 1000))]
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Start after this offer (the last one of the previous page); the
    /// `Link` header of a page gives the next page's address.
    pub after: Option<Uuid>,
}

/// A book's offers (its sellers), cheapest first, a page at a time.
#[utoipa::path(get, path = "/offers/{bookId}", tag = "offers",
    params(("bookId" = uuid::Uuid, Path, description = "Book id"), OffersPaging),
    responses(
        (status = 200, description = "Offers, cheapest first (ties by offer id). When more follow, the `Link` header gives the next page: `</offers/{bookId}?limit=N&after={last offer id}>; rel=\"next\"`; the last page has no `Link`.",
            body = [Offer],
            headers(("Link" = String, description = "`<...>; rel=\"next\"`: the next page, when more offers follow"))),
        (status = 400, description = "Malformed id or query string", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "limit out of range (1 to 1000)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database does not answer right now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_offers(
    State(state): State<AppState>,
    IdPath(book_id): IdPath,
    ValidQuery(paging): ValidQuery<OffersPaging>,
) -> Result<Response, ApiError> {
    let limit = paging.limit.unwrap_or(DEFAULT_OFFERS_PAGE);
    let page = state
        .queries
        .ask(ListOffers {
            book_id,
            after: paging.after,
            limit,
        })
        .await?;
    let next = match (page.more, page.offers.last()) {
        (true, Some(last)) => HeaderValue::from_str(&format!(
            "</offers/{book_id}?limit={limit}&after={}>; rel=\"next\"",
            last.id
        ))
        .ok(),
        _ => None,
    };
    let mut response = Json(page.offers).into_response();
    if let Some(next) = next {
        response.headers_mut().insert(header::LINK, next);
    }
    Ok(response)
}
