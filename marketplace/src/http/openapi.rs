//! `GET /openapi.json`, generated from the route and payload types.

use axum::Json;
use utoipa::{
    openapi::{
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
        ContentBuilder, Ref, RefOr, ResponseBuilder,
    },
    Modify, OpenApi,
};

use super::{books, edge::rate_limit::is_exempt, health, offers, orders, users};

/// The OpenAPI 3 document of the API.
#[derive(OpenApi)]
#[openapi(
    info(title = "Books marketplace API", description = "Writes are commands answered 200 once accepted; reads are synchronous. With authentication on, writes and order reads need `Authorization: Bearer <JWT>` (the `bearerAuth` scheme) and act only for the token's user; in open mode (no key configured) nothing is checked."),
    modifiers(&BearerAuth, &AnyRoute),
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

/// The answers any route may give, whatever it does, added to each
/// operation that does not document them itself: a refused token
/// (authentication on), the rate limit and load shedding or the request
/// timeout (where they apply). Each is problem+json.
struct AnyRoute;

/// A token sent and refused, on a route that needs none.
const REFUSED_TOKEN: &str = "Authentication on: a bearer token was sent and refused (`WWW-Authenticate: Bearer realm=\"marketplace\", error=\"invalid_token\"`); this route needs none, so send a valid token or none";

/// The rate limit.
const RATE_LIMITED: &str = "Rate limit (`--rate-limit-per-second`, `--rate-limit-burst`): this client sent more than its rate; retry after `Retry-After` seconds";

/// Load shedding and the request timeout.
const SHED_OR_TIMEOUT: &str = "the server sheds load (`--max-in-flight`), or the request ran over `--request-timeout`; retry after `Retry-After` seconds";

impl Modify for AnyRoute {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let mut answers = vec![("401", REFUSED_TOKEN.to_owned())];
            if !is_exempt(path) {
                answers.push(("429", RATE_LIMITED.to_owned()));
            }
            // `/health/live` is never shed (`edge::in_flight`).
            let shed = path != "/health/live";
            if shed {
                answers.push(("503", format!("Unavailable: {SHED_OR_TIMEOUT}")));
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let responses = &mut operation.responses.responses;
                // A route's own 503 (the bus, the database) comes on top.
                if let (true, Some(RefOr::T(own))) = (shed, responses.get_mut("503")) {
                    own.description = format!("{}; or {SHED_OR_TIMEOUT}", own.description);
                }
                for (status, description) in &answers {
                    responses.entry((*status).to_owned()).or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(description)
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
}

/// Serves the OpenAPI document.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
