//! Who is asking, at the HTTP edge: the layer that verifies bearer tokens
//! (RFC 6750) and the [`Caller`] extractor routes check owners with.
//!
//! With authentication on, a request's `Authorization: Bearer <token>` is
//! verified before any route runs: a refused token is `401`
//! (`error="invalid_token"`), a good one puts its [`Principal`] (and the
//! [`Caller`]) in the request's extensions. A request without a token goes
//! on: the catalogue reads are public, and the routes that need a user
//! answer `401` through [`Caller`]. With authentication off (open mode)
//! nothing is checked: the layer marks every request [`Caller::Anyone`].
//! A route reached without the layer finds no caller and answers `401`.

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{header, request::Parts, HeaderMap},
    middleware::Next,
    response::{IntoResponse, Response},
};
use uuid::Uuid;

use super::error::{ApiError, Challenge};
use crate::auth::{Principal, Verifier};

/// Whether the API checks who is asking.
#[derive(Clone)]
pub enum Authentication {
    /// Open mode: no key configured, no check at all (the original API).
    Off,
    /// Bearer tokens verified by this verifier.
    Bearer(Verifier),
}

impl Authentication {
    /// What `/health/ready` says: `off` or `on`.
    pub fn state(&self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Bearer(_) => "on",
        }
    }
}

/// The `detail` of a `503` when the issuer's keys cannot be fetched.
const KEYS_UNAVAILABLE: &str = "the keys that verify tokens cannot be fetched right now";

/// Verifies the bearer token of each request, when authentication is on.
pub async fn authenticate(
    State(auth): State<Authentication>,
    mut request: Request,
    next: Next,
) -> Response {
    let Authentication::Bearer(verifier) = &auth else {
        request.extensions_mut().insert(Caller::Anyone);
        return next.run(request).await;
    };
    match bearer_token(request.headers()) {
        Bearer::Absent => {}
        Bearer::Unreadable => {
            tracing::info!("bearer token refused: unreadable Authorization header");
            return ApiError::Unauthorized(Challenge::InvalidToken).into_response();
        }
        Bearer::Token(token) => match verifier.verify(token).await {
            Ok(principal) => {
                request.extensions_mut().insert(principal);
                request.extensions_mut().insert(Caller::User(principal));
            }
            Err(error) if error.is_unavailable() => {
                return ApiError::Unavailable(KEYS_UNAVAILABLE.to_owned()).into_response();
            }
            Err(error) => {
                tracing::info!(%error, "bearer token refused");
                return ApiError::Unauthorized(Challenge::InvalidToken).into_response();
            }
        },
    }
    next.run(request).await
}

/// What the `Authorization` header of a request holds.
pub(super) enum Bearer<'a> {
    /// No `Authorization` header, or another scheme than `Bearer`.
    Absent,
    /// `Bearer` with no token, or a header that is not text.
    Unreadable,
    Token(&'a str),
}

/// The token of `Authorization: Bearer <token>` (the scheme is
/// case-insensitive).
pub(super) fn bearer_token(headers: &HeaderMap) -> Bearer<'_> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Bearer::Absent;
    };
    let Ok(value) = value.to_str() else {
        return Bearer::Unreadable;
    };
    let (scheme, token) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Bearer::Absent;
    }
    match token.trim() {
        "" => Bearer::Unreadable,
        token => Bearer::Token(token),
    }
}

/// Who sent a request that acts for a user: the signed-in user, or anyone
/// in open mode. Extracting it answers `401` when authentication is on
/// and the request has no (valid) token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Open mode: whoever asks may act for any user.
    Anyone,
    /// The user of the request's verified token.
    User(Principal),
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .copied()
            .ok_or(ApiError::Unauthorized(Challenge::TokenRequired))
    }
}

impl Caller {
    /// The signed-in user; `None` in open mode.
    pub fn user(self) -> Option<Uuid> {
        match self {
            Self::Anyone => None,
            Self::User(principal) => Some(principal.user),
        }
    }

    /// Whether the caller may act as user `user`: anyone in open mode, only
    /// that user when signed in.
    pub fn is(self, user: Uuid) -> bool {
        self.user().is_none_or(|signed_in| signed_in == user)
    }

    /// `403` with `detail` unless the caller may act as `user`.
    pub fn must_be(self, user: Uuid, detail: &str) -> Result<(), ApiError> {
        if self.is(user) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(detail.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{header, HeaderMap, HeaderValue};
    use uuid::Uuid;

    use crate::{
        auth::Principal,
        http::access::{bearer_token, Bearer, Caller},
    };

    fn with(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn the_bearer_token_is_read_whatever_the_scheme_case() {
        assert!(matches!(
            bearer_token(&with("Bearer abc")),
            Bearer::Token("abc")
        ));
        assert!(matches!(
            bearer_token(&with("bearer  abc ")),
            Bearer::Token("abc")
        ));
        assert!(matches!(bearer_token(&with("Bearer")), Bearer::Unreadable));
        assert!(matches!(
            bearer_token(&with("Basic dXNlcjpwYXNz")),
            Bearer::Absent
        ));
        assert!(matches!(bearer_token(&HeaderMap::new()), Bearer::Absent));
    }

    #[test]
    fn in_open_mode_anyone_acts_for_any_user() {
        let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(Caller::Anyone.is(ann));
        let signed_in = Caller::User(Principal { user: ann });
        assert!(signed_in.is(ann));
        assert!(!signed_in.is(bob));
    }
}
