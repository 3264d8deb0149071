//! Cursor pages: the opaque `after` token a list hands out, and the
//! `Link: <…>; rel="next"` header (RFC 8288) that points at the next page.
//!
//! A cursor is the sort key of a page's last row (e.g. its registration
//! time and id), serialised as JSON and encoded as URL-safe base64, so a
//! client treats it as an opaque string and the next page is a keyset
//! query (`WHERE (key) > (cursor) ORDER BY key LIMIT n`) whose cost does
//! not grow with how deep the client has paged. A cursor that does not
//! decode to the list's key is a `422` on the field `after`.

use axum::{
    http::{header, HeaderValue},
    response::{IntoResponse, Response},
    Json,
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, FieldError};

/// Longest cursor accepted, in bytes (a key is a few dozen).
pub const MAX_CURSOR_LEN: usize = 512;

/// Encodes a page's last sort key as an opaque cursor.
pub fn encode<K: Serialize>(key: &K) -> String {
    // Serialising a plain key (numbers, strings, ids) cannot fail.
    let json = serde_json::to_vec(key).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a cursor this API handed out; anything else is a `422` on
/// `after`.
pub fn decode<K: DeserializeOwned>(cursor: &str) -> Result<K, ApiError> {
    let invalid = || {
        ApiError::Validation(vec![FieldError {
            field: "after".to_owned(),
            message: "not a cursor of this list: pass the `next` cursor of a previous page"
                .to_owned(),
        }])
    };
    if cursor.len() > MAX_CURSOR_LEN {
        return Err(invalid());
    }
    let json = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    serde_json::from_slice(&json).map_err(|_| invalid())
}

/// A page of a cursor-paged list: its items and, when more follow, the
/// cursor of the next page.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The page's items, in the list's order.
    pub items: Vec<T>,
    /// Pass as `after` for the next page; `null` on the last page.
    #[schema(required = true)]
    pub next: Option<String>,
}

/// Sets `Link: <{next}>; rel="next"` on `response` when there is a next page.
/// `next` is the next page's path and query, already percent-encoded.
pub fn with_next_link(mut response: Response, next: Option<&str>) -> Response {
    if let Some(value) =
        next.and_then(|next| HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")).ok())
    {
        response.headers_mut().insert(header::LINK, value);
    }
    response
}

/// `text` percent-encoded for a query string: every byte but the unreserved
/// characters of RFC 3986 (`A-Z a-z 0-9 - . _ ~`) as `%XX`.
pub fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// A [`Page`] as JSON with its `Link` header; `path` is the list's path and
/// `query` the other parameters to keep (percent-encoded, without `after`).
pub fn page_response<T: Serialize>(page: Page<T>, path: &str, query: &str) -> Response {
    let next = page.next.as_ref().map(|cursor| {
        if query.is_empty() {
            format!("{path}?after={cursor}")
        } else {
            format!("{path}?{query}&after={cursor}")
        }
    });
    with_next_link(Json(page).into_response(), next.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_decodes_to_the_key_it_encodes() {
        let key = ("2026-11-30T17:00:00.123456Z".to_owned(), uuid::Uuid::nil());
        let cursor = encode(&key);
        assert!(cursor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(decode::<(String, uuid::Uuid)>(&cursor).unwrap(), key);
    }

    #[test]
    fn query_text_is_percent_encoded() {
        assert_eq!(
            percent_encode("Émile & co/1+1=2 ~ok"),
            "%C3%89mile%20%26%20co%2F1%2B1%3D2%20~ok"
        );
    }

    #[test]
    fn a_foreign_or_oversized_cursor_is_refused_on_after() {
        for cursor in [
            "not base64!",
            "bm90IGpzb24",
            &"A".repeat(MAX_CURSOR_LEN + 4),
        ] {
            match decode::<(String, uuid::Uuid)>(cursor) {
                Err(ApiError::Validation(errors)) => assert_eq!(errors[0].field, "after"),
                other => panic!("{cursor}: {other:?}"),
            }
        }
    }
}
