//! What the edge adds to every operation of the OpenAPI document, once for
//! all routes rather than in each route's annotations:
//!
//! - `429` (problem+json, `Retry-After`, `RateLimit-Policy`, `RateLimit`)
//!   on every rate-limited route ([`is_exempt`] ones excepted);
//! - `503` (problem+json, `Retry-After`) on every route that can be shed or
//!   time out ([`is_never_shed`] ones excepted), merged into the route's
//!   own `503` when it has one;
//! - the `x-request-id` header on every answer, and the `RateLimit-Policy`
//!   and `RateLimit` headers on every answer of a rate-limited route;
//! - on every `GET` ([`caching`](super::caching)): the `If-None-Match`
//!   parameter, the `ETag`, `Cache-Control` (and, for a person's own data,
//!   `Vary`) headers of its `200`, and its `304`.

use std::collections::BTreeSet;

use utoipa::{
    openapi::{
        header::Header,
        path::{Operation, ParameterBuilder, ParameterIn, PathItem},
        response::Response,
        Components, Content, Object, OpenApi, Ref, RefOr, Required, Type,
    },
    Modify, PartialSchema, ToSchema,
};

use super::{
    caching::{self, CachePolicy},
    in_flight::is_never_shed,
    rate_limit::is_exempt,
    REQUEST_ID,
};
use crate::http::error::Problem;

/// The component response of a `429`.
pub const TOO_MANY_REQUESTS: &str = "TooManyRequests";

/// The component response of a `503` of the edge.
pub const SERVICE_UNAVAILABLE: &str = "ServiceUnavailable";

const PROBLEM_JSON: &str = "application/problem+json";

/// The headers' names as the document spells them (HTTP ignores case).
const RETRY_AFTER: &str = "Retry-After";
const RATELIMIT_POLICY: &str = "RateLimit-Policy";
const RATELIMIT: &str = "RateLimit";
const IF_NONE_MATCH: &str = "If-None-Match";
const ETAG: &str = "ETag";
const CACHE_CONTROL: &str = "Cache-Control";
const VARY: &str = "Vary";

/// What the edge answers besides the routes: register with
/// `#[openapi(modifiers(&EdgeAnswers))]`.
#[derive(Debug, Clone, Copy)]
pub struct EdgeAnswers;

impl Modify for EdgeAnswers {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Components::new);
        components
            .schemas
            .entry(Problem::name().into_owned())
            .or_insert_with(Problem::schema);
        components
            .responses
            .insert(TOO_MANY_REQUESTS.to_owned(), too_many_requests().into());
        components
            .responses
            .insert(SERVICE_UNAVAILABLE.to_owned(), service_unavailable().into());
        let mut referenced = BTreeSet::new();
        for (path, item) in &mut openapi.paths.paths {
            if let Some(get) = item.get.as_mut() {
                add_conditional(get, caching::policy(path));
            }
            let limited = !is_exempt(path);
            let shed = !is_never_shed(path);
            for operation in operations(item) {
                add_answers(operation, limited, shed);
                for response in operation.responses.responses.values_mut() {
                    match response {
                        RefOr::T(response) => add_headers(response, limited),
                        RefOr::Ref(reference) => {
                            referenced.insert(reference.ref_location.clone());
                        }
                    }
                }
            }
        }
        // Responses the routes share as components carry the request id
        // too (their rate-limit headers are theirs to describe).
        for location in referenced {
            let name = location.rsplit('/').next().unwrap_or_default();
            if let Some(RefOr::T(response)) = components.responses.get_mut(name) {
                response
                    .headers
                    .entry(REQUEST_ID.to_owned())
                    .or_insert_with(request_id);
            }
        }
    }
}

/// Every operation of a path.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Adds the `429` and `503` of the edge to `operation`.
fn add_answers(operation: &mut Operation, limited: bool, shed: bool) {
    let responses = &mut operation.responses.responses;
    if limited {
        responses
            .entry("429".to_owned())
            .or_insert_with(|| Ref::from_response_name(TOO_MANY_REQUESTS).into());
    }
    if shed {
        match responses.get_mut("503") {
            None => {
                responses.insert(
                    "503".to_owned(),
                    Ref::from_response_name(SERVICE_UNAVAILABLE).into(),
                );
            }
            // The route's own 503 (a dependency away): the edge's are
            // answered under the same status.
            Some(RefOr::T(own)) => {
                own.description = format!("{}; {}", own.description, EDGE_UNAVAILABLE);
                own.headers
                    .entry(RETRY_AFTER.to_owned())
                    .or_insert_with(retry_after);
            }
            Some(RefOr::Ref(_)) => {}
        }
    }
}

/// Adds to the `GET` operation of a route whose answers follow `policy`:
/// the `If-None-Match` parameter, the caching headers of its `200`, and its
/// `304`.
fn add_conditional(operation: &mut Operation, policy: CachePolicy) {
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    if !parameters
        .iter()
        .any(|parameter| parameter.name.eq_ignore_ascii_case(IF_NONE_MATCH))
    {
        parameters.push(
            ParameterBuilder::new()
                .name(IF_NONE_MATCH)
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Entity tags of answers the client holds (`\"...\"`, `W/\"...\"`, \
                     comma-separated), or `*`: when one is the current `ETag` \
                     (weak comparison) or `*` is sent, the answer is `304` with no body",
                ))
                .schema(Some(Object::with_type(Type::String)))
                .build(),
        );
    }
    let responses = &mut operation.responses.responses;
    if let Some(RefOr::T(ok)) = responses.get_mut("200") {
        add_caching_headers(ok, policy);
    }
    responses.entry("304".to_owned()).or_insert_with(|| {
        let mut response = Response::new(
            "Not Modified: `If-None-Match` named the current `ETag` (or was `*`); \
             no body, the `ETag` and `Cache-Control` of the `200` it stands for",
        );
        add_caching_headers(&mut response, policy);
        response.into()
    });
}

/// The `ETag`, `Cache-Control` and (per caller) `Vary` of a `200` or `304`
/// of a route whose answers follow `policy`.
fn add_caching_headers(response: &mut Response, policy: CachePolicy) {
    let headers = &mut response.headers;
    headers.entry(ETAG.to_owned()).or_insert_with(|| {
        header(
            Type::String,
            "Strong validator of this answer: `\"` + the XXH3-128 of its body in 32 hex \
             digits + `\"`; sent when the body is at most 1 MiB. Send it back in \
             `If-None-Match` to get `304` while the answer is unchanged",
        )
    });
    headers.entry(CACHE_CONTROL.to_owned()).or_insert_with(|| {
        header(
            Type::String,
            &format!("`{}` on this route", policy.cache_control),
        )
    });
    if policy.per_caller {
        headers.entry(VARY.to_owned()).or_insert_with(|| {
            header(
                Type::String,
                "`Authorization`: the answer depends on who asks",
            )
        });
    }
}

/// When the edge answers `503`.
const EDGE_UNAVAILABLE: &str = "or too many requests are in flight on the server \
     (`/problems/overloaded`, answered at once), or the request ran past the request \
     timeout (`/problems/timeout`); retry after `Retry-After` seconds";

/// Adds the headers of every answer to `response`.
fn add_headers(response: &mut Response, limited: bool) {
    let headers = &mut response.headers;
    headers
        .entry(REQUEST_ID.to_owned())
        .or_insert_with(request_id);
    if limited {
        headers
            .entry(RATELIMIT_POLICY.to_owned())
            .or_insert_with(ratelimit_policy);
        headers
            .entry(RATELIMIT.to_owned())
            .or_insert_with(ratelimit);
    }
}

fn header(kind: Type, description: &str) -> Header {
    let mut header = Header::new(Object::with_type(kind));
    header.description = Some(description.to_owned());
    header
}

fn request_id() -> Header {
    header(
        Type::String,
        "The client's own `x-request-id` when it sent a short token \
         (1..64 letters, digits or `-_.:+/=@`), else a new UUID; the server's \
         log lines about the request carry it",
    )
}

fn retry_after() -> Header {
    header(Type::Integer, "Seconds to wait before retrying")
}

fn ratelimit_policy() -> Header {
    header(
        Type::String,
        "The client's allowance, when rate limiting is on \
         (draft-ietf-httpapi-ratelimit-headers): `\"per-client\";q=200;w=2`, \
         a bucket of `q` requests refilled in `w` seconds",
    )
}

fn ratelimit() -> Header {
    header(
        Type::String,
        "What is left of the client's allowance, when rate limiting is on \
         (draft-ietf-httpapi-ratelimit-headers): `\"per-client\";r=57;t=1`, \
         `r` requests left, the bucket full again in `t` seconds",
    )
}

fn problem(description: &str) -> Response {
    let mut response = Response::new(description);
    response.content.insert(
        PROBLEM_JSON.to_owned(),
        Content::new(Some(Ref::from_schema_name(Problem::name()))),
    );
    response
        .headers
        .insert(RETRY_AFTER.to_owned(), retry_after());
    response.headers.insert(REQUEST_ID.to_owned(), request_id());
    response
}

fn too_many_requests() -> Response {
    let mut response = problem(
        "This client (its signed-in user, else its IP address) sent more requests than \
         its rate allows (`/problems/rate-limited`); retry after `Retry-After` seconds",
    );
    add_headers(&mut response, true);
    response
}

fn service_unavailable() -> Response {
    problem(
        "Too many requests are in flight on the server (`/problems/overloaded`, \
         answered at once), or the request ran past the request timeout \
         (`/problems/timeout`); retry after `Retry-After` seconds",
    )
}
