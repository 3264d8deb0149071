//! `POST /offer`, `GET /offers/{bookId}`.

use axum::{extract::State, Json};

use super::{
    error::{ApiError, Problem},
    extract::{IdPath, TraceParent, ValidJson},
    AppState,
};
use crate::{commands::CreateOffer, model::Offer, queries::ListOffers};

/// Put copies of a book on sale.
#[utoipa::path(post, path = "/offer", tag = "offers", request_body = CreateOffer,
    responses(
        (status = 200, description = "Accepted: the offer will be listed once its book and seller exist"),
        (status = 400, description = "Malformed JSON or wrong types", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "In-memory sync bus only: the book or seller does not exist, or the offer id is taken by another payload (id-conflict)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field is out of range, or a name, title or author holds a control character or a bidirectional override", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Cannot accept commands right now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create_offer(
    State(state): State<AppState>,
    trace: TraceParent,
    ValidJson(command): ValidJson<CreateOffer>,
) -> Result<(), ApiError> {
    state.dispatch(&command, trace).await
}

/// A book's offers (its sellers), cheapest first.
#[utoipa::path(get, path = "/offers/{bookId}", tag = "offers",
    params(("bookId" = uuid::Uuid, Path, description = "Book id")),
    responses(
        (status = 200, description = "Offers, cheapest first", body = [Offer]),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database does not answer right now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_offers(
    State(state): State<AppState>,
    IdPath(book_id): IdPath,
) -> Result<Json<Vec<Offer>>, ApiError> {
    Ok(Json(state.queries.ask(ListOffers(book_id)).await?))
}
