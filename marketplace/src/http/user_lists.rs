//! `GET /users/{id}/orders`, `GET /users/{id}/offers`: a user's own lists,
//! newest first, a page at a time.
//!
//! Both lists are sorted by creation time, then id, both descending, and
//! paged by cursor ([`paging`]): a page's `next` is the position of its
//! last row, and the next page starts strictly after it (keyset paging),
//! so rows added meanwhile neither shift nor repeat the others. With
//! authentication on, only the user itself reads them: another signed-in
//! user is `403`, a request without a token `401`. In open mode anyone
//! may, as `GET /orders/{id}`.

use axum::{extract::State, response::Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;
use validator::Validate;

use super::{
    access::Caller,
    error::{ApiError, Problem},
    extract::{IdPath, ValidQuery},
    paging::{self, Page},
    AppState,
};
use crate::{
    model::{ListPosition, Order, SellerOffer, Slice},
    queries::{ListUserOffers, ListUserOrders},
};

/// Rows per page of a user's list when `limit` is not given.
pub const DEFAULT_LIST_PAGE: u32 = 20;

/// Most rows per page of a user's list.
pub const MAX_LIST_PAGE: u32 = 100;

/// What a cursor of these lists holds: the position of a page's last row
/// (its creation time, then its id).
type Cursor = (DateTime<Utc>, Uuid);

/// Paging of a user's list (keyset: a page starts after the last row of
/// the previous one).
#[derive(Debug, Deserialize, Validate, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListPaging {
    /// Rows per page, 1 to 100 (default 20).
    #[validate(range(min = 1, max = 100))]
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// The `next` cursor of the previous page (opaque); the first page
    /// without it. A string that is not a cursor of this list is `422`.
    #[param(max_length = 512)]
    pub after: Option<String>,
}

impl ListPaging {
    /// Rows per page.
    fn limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_LIST_PAGE)
    }

    /// The position to start after, decoded from `after` (`422` when it is
    /// not a cursor of these lists).
    fn after(&self) -> Result<Option<ListPosition>, ApiError> {
        self.after
            .as_deref()
            .map(paging::decode::<Cursor>)
            .transpose()
            .map(|cursor| cursor.map(|(created_at, id)| ListPosition { created_at, id }))
    }
}

/// The page of `slice`, whose `next` cursor is the position (`key`) of its
/// last row when more rows follow.
fn page_of<T>(slice: Slice<T>, key: impl Fn(&T) -> Cursor) -> Page<T> {
    let next = match (slice.more, slice.items.last()) {
        (true, Some(last)) => Some(paging::encode(&key(last))),
        _ => None,
    };
    Page {
        items: slice.items,
        next,
    }
}

/// A user's orders, newest first, each with its items and what it cost.
///
/// The same orders as `GET /orders/{id}` answers, a page at a time. With
/// authentication on, only the user itself reads its orders.
#[utoipa::path(get, path = "/users/{id}/orders", tag = "orders",
    params(("id" = uuid::Uuid, Path, description = "User id (the buyer)"), ListPaging),
    security((), ("bearerAuth" = [])),
    responses(
        (status = 200, description = "The user's orders, newest first (creation time, then id, both descending); empty for a user with no orders, or unknown. When more follow, `next` is the cursor of the next page and the `Link` header its address: `</users/{id}/orders?limit=N&after={next}>; rel=\"next\"`; the last page has `next: null` and no `Link`.",
            body = Page<Order>,
            headers(("Link" = String, description = "`<...>; rel=\"next\"`: the next page, when more orders follow"))),
        (status = 400, description = "Malformed id or query string", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Authentication on: no bearer token, or a token refused (`WWW-Authenticate: Bearer realm=\"marketplace\"`, with `error=\"invalid_token\"` for a refused token)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Authentication on: the path's id is not the signed-in user", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "limit out of range (1 to 100), or after is not a cursor of this list", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database does not answer right now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_user_orders(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(user_id): IdPath,
    ValidQuery(paging): ValidQuery<ListPaging>,
) -> Result<Response, ApiError> {
    caller.must_be(
        user_id,
        "a signed-in user reads only its own orders: the path's id must be the token's subject",
    )?;
    let limit = paging.limit();
    let orders = state
        .queries
        .ask(ListUserOrders {
            user_id,
            after: paging.after()?,
            limit,
        })
        .await?;
    Ok(paging::page_response(
        page_of(orders, |order| (order.created_at, order.id)),
        &format!("/users/{user_id}/orders"),
        &format!("limit={limit}"),
    ))
}

/// A seller's offers, newest first, sold-out ones included, with the
/// stock each has left and its book's title.
///
/// With authentication on, only the seller itself reads its offers.
#[utoipa::path(get, path = "/users/{id}/offers", tag = "offers",
    params(("id" = uuid::Uuid, Path, description = "User id (the seller)"), ListPaging),
    security((), ("bearerAuth" = [])),
    responses(
        (status = 200, description = "The seller's offers, newest first (creation time, then id, both descending), sold-out ones with `stock` 0; empty for a user with no offers, or unknown. When more follow, `next` is the cursor of the next page and the `Link` header its address: `</users/{id}/offers?limit=N&after={next}>; rel=\"next\"`; the last page has `next: null` and no `Link`.",
            body = Page<SellerOffer>,
            headers(("Link" = String, description = "`<...>; rel=\"next\"`: the next page, when more offers follow"))),
        (status = 400, description = "Malformed id or query string", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Authentication on: no bearer token, or a token refused (`WWW-Authenticate: Bearer realm=\"marketplace\"`, with `error=\"invalid_token\"` for a refused token)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Authentication on: the path's id is not the signed-in user", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "limit out of range (1 to 100), or after is not a cursor of this list", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The database does not answer right now", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list_user_offers(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(seller_id): IdPath,
    ValidQuery(paging): ValidQuery<ListPaging>,
) -> Result<Response, ApiError> {
    caller.must_be(
        seller_id,
        "a signed-in user reads only its own offers: the path's id must be the token's subject",
    )?;
    let limit = paging.limit();
    let offers = state
        .queries
        .ask(ListUserOffers {
            seller_id,
            after: paging.after()?,
            limit,
        })
        .await?;
    Ok(paging::page_response(
        page_of(offers, |offer| (offer.created_at, offer.id)),
        &format!("/users/{seller_id}/offers"),
        &format!("limit={limit}"),
    ))
}
