//! `GET /openapi.json`, generated from the route and payload types.

use axum::Json;
use utoipa::OpenApi;

use super::{books, health, offers, orders, users};

/// The OpenAPI 3 document of the API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Books marketplace API", description = "Writes are commands answered 200 once accepted; reads are synchronous."),
    paths(
        users::save_user, users::get_user,
        books::save_book, books::list_books, books::get_book,
        offers::create_offer, offers::list_offers,
        orders::create_order, orders::get_order,
        health::live, health::ready,
    ),
    tags(
        (name = "users"), (name = "books"), (name = "offers"), (name = "orders"),
        (name = "operations", description = "Health probes"),
    )
)]
pub struct ApiDoc;

/// Serves the OpenAPI document.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
