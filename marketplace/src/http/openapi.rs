//! `GET /openapi.json`, generated from the route and payload types.

use axum::Json;
use utoipa::{
    openapi::{
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
        ContentBuilder, Ref, RefOr, ResponseBuilder,
    },
    Modify, OpenApi,
};

use super::{books, edge::openapi::EdgeAnswers, health, offers, orders, user_lists, users};

/// The OpenAPI 3 document of the API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Books marketplace API", description = "Writes are commands answered 200 once accepted; reads are synchronous. With authentication on, writes, order reads and a user's own lists need `Authorization: Bearer <JWT>` (the `bearerAuth` scheme) and act only for the token's user; in open mode (no key configured) nothing is checked."),
    modifiers(&BearerAuth, &RefusedToken, &EdgeAnswers),
    paths(
        users::save_user, users::get_user,
        books::save_book, books::list_books, books::get_book,
        offers::create_offer, offers::list_offers,
        orders::create_order, orders::get_order,
        user_lists::list_user_orders, user_lists::list_user_offers,
        health::live, health::ready,
    ),
    tags(
        (name = "users"), (name = "books"), (name = "offers"), (name = "orders"),
        (name = "operations", description = "Health probes"),
    )
)]
pub struct ApiDoc;

/// The `bearerAuth` security scheme: an RFC 6750 bearer token, a JWT whose
/// `sub` is the user id.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A JWT whose `sub` is the user id, signed by the configured key, with the configured `iss` and `aud`. Needed only when authentication is on.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The `401` of a refused token on the routes that need none (authentication
/// on): a token is checked whenever it is sent, on every route. The routes
/// that act for a user document their own `401`.
struct RefusedToken;

const REFUSED_TOKEN: &str = "Authentication on: a bearer token was sent and refused \
     (`WWW-Authenticate: Bearer realm=\"marketplace\", error=\"invalid_token\"`); \
     this route needs none, so send a valid token or none";

impl Modify for RefusedToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                operation
                    .responses
                    .responses
                    .entry("401".to_owned())
                    .or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(REFUSED_TOKEN)
                                .content(
                                    "application/problem+json",
                                    ContentBuilder::new()
                                        .schema(Some(Ref::from_schema_name("Problem")))
                                        .build(),
                                )
                                .build(),
                        )
                    });
            }
        }
    }
}

/// Serves the OpenAPI document.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
