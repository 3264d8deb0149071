//! Conditional requests and caching (RFC 9110 §8.8.3 and §13, RFC 9111):
//! every `200` answer to a `GET` (or `HEAD`) carries a strong `ETag` and
//! the `Cache-Control` of its route; a request whose `If-None-Match` names
//! the current `ETag` is answered `304 Not Modified` with no body. Error
//! answers (`4xx`, `5xx`) carry `Cache-Control: no-store`.
//!
//! **The validator is a digest of the body.** The `ETag` is
//! `"<xxh3-128 of the body bytes, 32 hex digits>"`, computed from the answer
//! as it is sent, not from row versions: a list joins rows whose changes
//! carry no version (an offer's stock, a seller's name, a book's cheapest
//! offer), and a change a version missed would be a stale `304`. The body is
//! serialised anyway; XXH3 is a fixed algorithm, so every replica and build
//! gives the same tag for the same bytes. Equal bytes are an equal
//! representation: the tag is strong. Hashing a page of 100 books (about
//! 19 KB) costs about 1 µs in a release build (see the unit test
//! `hashing_a_page_of_a_hundred_books`). Bodies over [`ETAG_BODY_LIMIT`],
//! or whose length is not known before they are read (a stream), are passed
//! on untouched, without an `ETag`.
//!
//! **`If-None-Match`** (RFC 9110 §13.1.2) is a list of entity tags, or `*`;
//! it is compared weakly (`W/"x"` matches `"x"`), and `*` matches any
//! current answer. A match answers `304` with the `200`'s headers but those
//! describing its body (`Content-Type`, `Content-Length`): `ETag`,
//! `Cache-Control`, `Vary` and `x-request-id` among them. A malformed
//! `If-None-Match` matches nothing (a full `200`). Only `200` answers are
//! compared: a `404` stays a `404`, whatever the request's preconditions.
//!
//! **`Cache-Control` per route** is one table, [`ROUTES`]; a `GET` route
//! missing from it is treated as a person's own data ([`PERSONAL`]), the
//! safe side. A route that sets its own `Cache-Control` or `ETag` keeps it.

use axum::{
    body::{Body, HttpBody},
    extract::{MatchedPath, Request},
    http::{
        header::{
            CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LANGUAGE, CONTENT_LENGTH, CONTENT_RANGE,
            CONTENT_TYPE, ETAG, IF_NONE_MATCH, VARY,
        },
        HeaderMap, HeaderValue, Method, StatusCode,
    },
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::http::error::ApiError;

/// Largest body given an `ETag` (1 MiB): the largest page of the API (100
/// orders of 50 items each) is about 0.6 MB. A larger body is sent as it
/// comes, without one, rather than held whole in memory to be hashed.
pub const ETAG_BODY_LIMIT: usize = 1024 * 1024;

/// How a route's successful answers may be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePolicy {
    /// The `Cache-Control` of its `200` and `304` answers.
    pub cache_control: &'static str,
    /// Whether the answer depends on the caller (its `Authorization`): then
    /// it carries `Vary: Authorization`.
    pub per_caller: bool,
}

/// The catalogue (books, their offers): the same for everyone, and may be
/// a few seconds stale anywhere, a shared cache included.
pub const CATALOGUE: CachePolicy = CachePolicy {
    cache_control: "public, max-age=5",
    per_caller: false,
};

/// A user's public profile (its name): stored, but revalidated at every use,
/// so a rename shows at once.
pub const PUBLIC_PROFILE: CachePolicy = CachePolicy {
    cache_control: "no-cache",
    per_caller: false,
};

/// A person's own data (its orders, its offers): only the caller's own
/// cache stores it, and revalidates it at every use.
pub const PERSONAL: CachePolicy = CachePolicy {
    cache_control: "private, no-cache",
    per_caller: true,
};

/// Health probes and metrics: never stored, always asked afresh.
pub const OPERATIONS: CachePolicy = CachePolicy {
    cache_control: "no-store",
    per_caller: false,
};

/// The OpenAPI document: changes only with a release.
pub const API_DOCUMENT: CachePolicy = CachePolicy {
    cache_control: "public, max-age=300",
    per_caller: false,
};

/// The `Cache-Control` of every error answer (`4xx`, `5xx`).
pub const ERROR_CACHE_CONTROL: &str = "no-store";

/// The policy of every `GET` route, by its template (the names of path
/// parameters do not matter: `/offers/{book_id}` and `/offers/{bookId}` are
/// one route). A new `GET` route is one more line; one left out is
/// [`PERSONAL`].
pub const ROUTES: &[(&str, CachePolicy)] = &[
    ("/books", CATALOGUE),
    ("/books/{id}", CATALOGUE),
    ("/offers/{bookId}", CATALOGUE),
    ("/users/{id}", PUBLIC_PROFILE),
    ("/users/{id}/orders", PERSONAL),
    ("/users/{id}/offers", PERSONAL),
    ("/orders/{id}", PERSONAL),
    ("/health/live", OPERATIONS),
    ("/health/ready", OPERATIONS),
    ("/metrics", OPERATIONS),
    ("/openapi.json", API_DOCUMENT),
];

/// The policy of the route whose template is `route` ([`ROUTES`], else
/// [`PERSONAL`]).
pub fn policy(route: &str) -> CachePolicy {
    ROUTES
        .iter()
        .find(|(template, _)| same_route(template, route))
        .map_or(PERSONAL, |(_, policy)| *policy)
}

/// Whether two route templates are the same route, whatever their path
/// parameters are named.
fn same_route(a: &str, b: &str) -> bool {
    let is_parameter = |segment: &str| segment.starts_with('{') && segment.ends_with('}');
    let mut a = a.split('/');
    let mut b = b.split('/');
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(x), Some(y)) if x == y || (is_parameter(x) && is_parameter(y)) => {}
            _ => return false,
        }
    }
}

/// The strong `ETag` of `body`: `"` + 32 hex digits of its XXH3-128 + `"`.
pub fn etag(body: &[u8]) -> HeaderValue {
    let digest = xxhash_rust::xxh3::xxh3_128(body);
    HeaderValue::from_str(&format!("\"{digest:032x}\"")).unwrap_or_else(|_| unreachable_tag())
}

/// Never used: hex digits between quotes are a valid header value.
#[cold]
fn unreachable_tag() -> HeaderValue {
    HeaderValue::from_static("\"\"")
}

/// Whether the `If-None-Match` field values `conditions` match `etag`
/// (RFC 9110 §13.1.2): `*`, or a listed tag equal to it under the weak
/// comparison (`W/` prefixes ignored). A malformed list matches from its
/// start up to the first error, and nothing past it.
pub fn none_match<'a>(conditions: impl IntoIterator<Item = &'a HeaderValue>, etag: &[u8]) -> bool {
    let opaque = etag.strip_prefix(b"W/").unwrap_or(etag);
    conditions
        .into_iter()
        .any(|value| list_matches(value.as_bytes(), opaque))
}

/// Whether the entity-tag list `list` holds `*` or `opaque` (a quoted tag).
fn list_matches(list: &[u8], opaque: &[u8]) -> bool {
    let mut rest = list;
    loop {
        while let [b' ' | b'\t' | b',', tail @ ..] = rest {
            rest = tail;
        }
        if rest.is_empty() {
            return false;
        }
        if let Some(tail) = rest.strip_prefix(b"*") {
            // `*` stands alone in a valid field; any current answer matches.
            if tail.iter().all(|b| matches!(b, b' ' | b'\t')) {
                return true;
            }
            return false;
        }
        let tagged = rest.strip_prefix(b"W/").unwrap_or(rest);
        let Some(inner) = tagged.strip_prefix(b"\"") else {
            return false;
        };
        let Some(end) = inner.iter().position(|&b| b == b'"') else {
            return false;
        };
        // The tag with its quotes.
        if &tagged[..end + 2] == opaque {
            return true;
        }
        rest = &inner[end + 1..];
    }
}

/// The middleware: see the [module](self).
pub async fn conditional(request: Request, next: Next) -> Response {
    let head = request.method() == Method::HEAD;
    let readable = head || request.method() == Method::GET;
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| policy(path.as_str()));
    // Cheap clones (shared bytes), taken before the request moves on.
    let conditions: Vec<HeaderValue> = if readable {
        request
            .headers()
            .get_all(IF_NONE_MATCH)
            .iter()
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    let mut response = next.run(request).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        response
            .headers_mut()
            .entry(CACHE_CONTROL)
            .or_insert(HeaderValue::from_static(ERROR_CACHE_CONTROL));
        return response;
    }
    if !readable || status != StatusCode::OK {
        return response;
    }
    apply(route.unwrap_or(PERSONAL), response.headers_mut());
    if !response.headers().contains_key(ETAG) {
        response = match tag(response).await {
            Ok(tagged) => tagged,
            Err(error) => return error.into_response(),
        };
    }
    let matched = match response.headers().get(ETAG) {
        Some(etag) => !conditions.is_empty() && none_match(&conditions, etag.as_bytes()),
        None => false,
    };
    if matched {
        not_modified(response, head)
    } else {
        response
    }
}

/// Sets the `Cache-Control` (unless the route set one) and `Vary` of
/// `policy`.
fn apply(policy: CachePolicy, headers: &mut HeaderMap) {
    headers
        .entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static(policy.cache_control));
    if policy.per_caller {
        headers.append(VARY, HeaderValue::from_static("Authorization"));
    }
}

/// `response` with the `ETag` of its body, when the body's length is known
/// and at most [`ETAG_BODY_LIMIT`]; else as it is. The body is read once
/// (a JSON answer is a single buffer: no copy) and sent on as read.
async fn tag(response: Response) -> Result<Response, ApiError> {
    let known = response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|length| length <= ETAG_BODY_LIMIT as u64);
    if !known {
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, ETAG_BODY_LIMIT)
        .await
        .map_err(|error| ApiError::Internal(format!("reading an answer's body: {error}")))?;
    parts.headers.insert(ETAG, etag(&bytes));
    Ok(Response::from_parts(parts, Body::from(bytes)))
}

/// The `304` of `response`: its headers but those describing its body, and
/// no body. To a `HEAD`, whose `200` would have said the body's length
/// with no body either, it says that length too (RFC 9110 §8.6): else the
/// router would set the empty body's `Content-Length: 0`.
fn not_modified(response: Response, head: bool) -> Response {
    let length = response.body().size_hint().exact();
    let (mut parts, _body) = response.into_parts();
    parts.status = StatusCode::NOT_MODIFIED;
    for name in [
        CONTENT_TYPE,
        CONTENT_LENGTH,
        CONTENT_ENCODING,
        CONTENT_LANGUAGE,
        CONTENT_RANGE,
    ] {
        parts.headers.remove(name);
    }
    if let (true, Some(length)) = (head, length) {
        parts
            .headers
            .insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    Response::from_parts(parts, Body::empty())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rust_decimal::Decimal;
    use uuid::Uuid;

    use super::*;
    use crate::model::Book;

    fn values(fields: &[&'static str]) -> Vec<HeaderValue> {
        fields
            .iter()
            .map(|field| HeaderValue::from_static(field))
            .collect()
    }

    const TAG: &[u8] = b"\"0123abcd\"";

    #[test]
    fn a_listed_tag_matches_weakly_and_a_star_matches_anything() {
        for field in [
            "\"0123abcd\"",
            "W/\"0123abcd\"",
            "\"other\", \"0123abcd\"",
            "\"other\",W/\"0123abcd\"",
            " \"a,b\" ,\t\"0123abcd\" ",
            "*",
            " * ",
        ] {
            assert!(none_match(&values(&[field]), TAG), "{field}");
        }
        assert!(none_match(&values(&["\"other\"", "\"0123abcd\""]), TAG));
        assert!(none_match(&values(&["\"0123abcd\""]), b"W/\"0123abcd\""));
    }

    #[test]
    fn other_or_malformed_tags_match_nothing() {
        for field in [
            "",
            "\"0123abcde\"",
            "0123abcd",
            "\"0123abcd",
            "w/\"0123abcd\"",
            "\"other\", 0123abcd",
            "junk, \"0123abcd\"",
            "*, \"0123abcd\"",
            "\"0123ABCD\"",
        ] {
            assert!(!none_match(&values(&[field]), TAG), "{field}");
        }
    }

    #[test]
    fn routes_are_classified_whatever_their_parameters_are_named() {
        assert_eq!(policy("/offers/{book_id}"), CATALOGUE);
        assert_eq!(policy("/offers/{bookId}"), CATALOGUE);
        assert_eq!(policy("/books"), CATALOGUE);
        assert_eq!(policy("/users/{id}"), PUBLIC_PROFILE);
        assert_eq!(policy("/users/{user_id}/orders"), PERSONAL);
        assert_eq!(policy("/metrics"), OPERATIONS);
        assert_eq!(policy("/openapi.json"), API_DOCUMENT);
        assert_eq!(policy("/something/new"), PERSONAL);
        assert_eq!(policy("/books/{id}/more"), PERSONAL);
    }

    #[test]
    fn the_tag_is_a_quoted_hex_digest_stable_across_builds() {
        // XXH3-128 of the empty input, as the reference implementation
        // gives it: a tag must not change with the build or the replica.
        assert_eq!(etag(b""), "\"99aa06d3014798d86001c324468d497f\"");
        assert_ne!(etag(b"[1]"), etag(b"[2]"));
    }

    /// The cost of an `ETag` on a page of 100 books, printed (`--nocapture`)
    /// rather than asserted; a debug build is far slower than a release one.
    #[test]
    fn hashing_a_page_of_a_hundred_books() {
        let books: Vec<Book> = (0..100)
            .map(|i| Book {
                id: Uuid::new_v4(),
                title: format!("The Book of the Month, volume {i}"),
                author: "Frank Herbert".to_owned(),
                stock: 7,
                price: Decimal::new(4531 + i, 2),
                offer_id: Some(Uuid::new_v4()),
            })
            .collect();
        let body = serde_json::to_vec(&books).unwrap_or_default();
        let rounds: u32 = 1000;
        let started = Instant::now();
        let mut last = etag(b"");
        for _ in 0..rounds {
            last = etag(std::hint::black_box(&body));
        }
        let each = started.elapsed() / rounds;
        println!(
            "ETag of a page of 100 books ({} bytes): {each:?} per answer ({last:?})",
            body.len()
        );
    }
}
