//! The one place errors become HTTP answers: `application/problem+json`
//! (RFC 9457) with `type`, `title`, `status`, `detail` and, for bad fields,
//! `field` and `errors`.

use std::sync::Arc;

use axum::{
    extract::{
        rejection::{JsonRejection, PathRejection, QueryRejection},
        Request,
    },
    http::{header, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use bus_core::{DispatchError, HandlerError, QueryError};
use serde::Serialize;
use utoipa::ToSchema;
use validator::ValidationErrors;

use crate::{
    commands::validation::field_errors,
    model::{IdConflict, NotTheOwner},
    store::StoreError,
};

/// Everything a route can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, a wrong type, a missing field, a malformed id: `400`.
    #[error("{0}")]
    BadRequest(String),
    /// Well-formed input with a field out of range: `422`.
    #[error("invalid fields")]
    Validation(Vec<FieldError>),
    /// The body is larger than the limit: `413`.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The body is not declared as JSON: `415`.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No valid bearer token where one is needed: `401` with
    /// `WWW-Authenticate: Bearer realm="marketplace"` (and
    /// `error="invalid_token"` when a token was sent and refused). The
    /// verifier's reason is logged, never sent.
    #[error("{}", .0.detail())]
    Unauthorized(Challenge),
    /// The signed-in user may not do this (act as another user, edit a
    /// book registered by someone else): `403`.
    #[error("{0}")]
    Forbidden(String),
    /// No such resource: `404`.
    #[error("{0}")]
    NotFound(String),
    /// No such method on this path: `405`.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The command conflicts with current state (sync bus only: an offer
    /// whose book is unknown, an id reused with another payload): `409`.
    /// The text is the handler's own (it names only ids the client sent),
    /// never a driver's.
    #[error("{0}")]
    Conflict(String),
    /// The database refused data that passed validation (sync bus only):
    /// `422` with a fixed `detail`; what the database said is logged.
    #[error("refused by the database: {0}")]
    Refused(String),
    /// The command cannot be accepted right now (broker unreachable,
    /// shutting down) or a readiness check failed: `503` with
    /// `Retry-After` and a fixed `detail`; the cause is logged, never sent.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The bus holds as many commands as it may: `503` with `Retry-After`.
    #[error("the bus is saturated: {0}")]
    Saturated(String),
    /// As many requests are in flight as the server takes (`--max-in-flight`):
    /// `503` with `Retry-After`, at once.
    #[error("too many requests in flight")]
    Overloaded,
    /// The request took longer than `--request-timeout`: `503` with
    /// `Retry-After`.
    #[error("request timed out")]
    Timeout,
    /// The client sent more requests than its rate allows: `429` with
    /// `Retry-After` (seconds until a request is allowed again).
    #[error("rate limit exceeded")]
    TooManyRequests {
        /// Seconds until the next request is allowed.
        retry_after: u64,
    },
    /// A read's database cannot be reached (refused, pool timed out,
    /// statement timeout): `503` with `Retry-After`. The driver's error is
    /// logged, never sent.
    #[error("the database does not answer: {0}")]
    DatabaseUnavailable(String),
    /// A bug or an unexpected failure: `500`; details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a request is answered `401` (RFC 6750, section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// No bearer token on a request that needs a signed-in user.
    TokenRequired,
    /// A bearer token was sent and refused (bad signature, expired, another
    /// issuer or audience, not a user id): `error="invalid_token"`.
    InvalidToken,
    /// No bearer token on an admin route of a worker.
    AdminTokenRequired,
    /// A bearer token that is not the admin token, on an admin route:
    /// `error="invalid_token"`.
    InvalidAdminToken,
}

impl Challenge {
    /// The fixed `detail` of the answer.
    pub fn detail(self) -> &'static str {
        match self {
            Self::TokenRequired => {
                "this request needs a signed-in user: send Authorization: Bearer <token>"
            }
            Self::InvalidToken => {
                "the bearer token is invalid, expired, or not issued for this API"
            }
            Self::AdminTokenRequired => {
                "the admin routes need the admin token: send Authorization: Bearer <token>"
            }
            Self::InvalidAdminToken => "the bearer token is not the admin token",
        }
    }

    /// The `WWW-Authenticate` header of the answer.
    pub fn header(self) -> &'static str {
        match self {
            Self::TokenRequired => r#"Bearer realm="marketplace""#,
            Self::InvalidToken => r#"Bearer realm="marketplace", error="invalid_token""#,
            Self::AdminTokenRequired => r#"Bearer realm="marketplace-admin""#,
            Self::InvalidAdminToken => r#"Bearer realm="marketplace-admin", error="invalid_token""#,
        }
    }
}

/// The `detail` of a read whose database does not answer.
pub const DATABASE_UNAVAILABLE: &str = "the database does not answer right now; retry shortly";

/// The `detail` of a command or probe refused for want of a dependency.
pub const UNAVAILABLE: &str = "the service is unavailable right now; retry shortly";

/// The `detail` of a command refused because the bus is full.
pub const SATURATED: &str = "the bus is saturated; retry shortly";

/// The `detail` of a request shed because too many are in flight.
pub const OVERLOADED: &str =
    "too many requests are in flight; the server is saturated, retry shortly";

/// The `detail` of a request that took longer than the request timeout.
pub const TIMED_OUT: &str = "the request took too long to answer; retry shortly";

/// The `detail` of a request over its client's rate limit.
pub const RATE_LIMITED: &str =
    "too many requests from this client; retry after the delay in Retry-After";

/// The `detail` of data the database refused.
pub const REFUSED: &str = "the data was refused by a storage rule";

/// One invalid field of a request.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON path of the field, e.g. `items[0].quantity`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// URI reference naming the kind of problem (`/problems/{kind}`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What happened this time.
    pub detail: String,
    /// The first offending field, for `422`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every offending field, for `422`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Internal detail of an answer whose `detail` hides it (every `5xx`, a
/// refusal by the database), left in the response extensions for the
/// logging middleware: the conversion itself has no side effects.
#[derive(Debug, Clone)]
struct ServerErrorDetail(Arc<str>);

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_)
            | Self::Saturated(_)
            | Self::Overloaded
            | Self::Timeout
            | Self::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::Validation(_) => "validation",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::Conflict(_) => "conflict",
            Self::Refused(_) => "validation",
            Self::TooManyRequests { .. } => "rate-limited",
            Self::Overloaded => "overloaded",
            Self::Timeout => "timeout",
            Self::Unavailable(_) | Self::Saturated(_) | Self::DatabaseUnavailable(_) => {
                "unavailable"
            }
            Self::Internal(_) => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (detail, field, errors) = match &self {
            Self::Validation(errors) => (
                errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
                errors.first().map(|e| e.field.clone()),
                errors.clone(),
            ),
            Self::Internal(_) => ("an unexpected error occurred".to_owned(), None, Vec::new()),
            Self::DatabaseUnavailable(_) => (DATABASE_UNAVAILABLE.to_owned(), None, Vec::new()),
            Self::Unavailable(_) => (UNAVAILABLE.to_owned(), None, Vec::new()),
            Self::Saturated(_) => (SATURATED.to_owned(), None, Vec::new()),
            Self::Overloaded => (OVERLOADED.to_owned(), None, Vec::new()),
            Self::Timeout => (TIMED_OUT.to_owned(), None, Vec::new()),
            Self::TooManyRequests { .. } => (RATE_LIMITED.to_owned(), None, Vec::new()),
            Self::Refused(_) => (REFUSED.to_owned(), None, Vec::new()),
            other => (other.to_string(), None, Vec::new()),
        };
        let problem = Problem {
            kind: format!("/problems/{}", self.kind()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            field,
            errors,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::Unauthorized(challenge) = &self {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge.header()),
            );
        }
        if let Self::TooManyRequests { retry_after } = self {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
        }
        // Shed and throttled requests are not logged one by one: under a
        // flood that would be a second flood.
        let quiet = matches!(self, Self::Overloaded | Self::TooManyRequests { .. });
        if (status.is_server_error() || matches!(self, Self::Refused(_))) && !quiet {
            response
                .extensions_mut()
                .insert(ServerErrorDetail(self.to_string().into()));
        }
        response
    }
}

/// Logs the internal detail of every `5xx` answer (and of a refusal by the
/// database), with the request's id, so the log line of an answer can be
/// found from the `x-request-id` the client saw.
pub async fn log_server_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let uri = request.uri().clone();
    let request_id = request
        .headers()
        .get(super::edge::REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let response = next.run(request).await;
    if let Some(ServerErrorDetail(detail)) = response.extensions().get::<ServerErrorDetail>() {
        let status = response.status().as_u16();
        if status == 503 {
            tracing::warn!(%method, %uri, status, %request_id, error = %detail, "request not accepted");
        } else if status < 500 {
            tracing::warn!(%method, %uri, status, %request_id, error = %detail, "request refused");
        } else {
            tracing::error!(%method, %uri, status, %request_id, error = %detail, "request failed");
        }
    }
    response
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(r) => Self::UnsupportedMediaType(r.body_text()),
            JsonRejection::BytesRejection(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge
            }
            other => Self::BadRequest(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::BadRequest(format!("invalid path: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        Self::Validation(
            field_errors(&errors)
                .into_iter()
                .map(|(field, message)| FieldError { field, message })
                .collect(),
        )
    }
}

impl From<DispatchError> for ApiError {
    /// Only the handlers' own messages (naming ids the client sent) reach
    /// the client; what a driver or a broker said is kept for the log.
    fn from(error: DispatchError) -> Self {
        if matches!(error, DispatchError::Saturated { .. }) {
            return Self::Saturated(error.to_string());
        }
        if error.is_unavailable() {
            return Self::Unavailable(error.to_string());
        }
        match error {
            DispatchError::Handler(HandlerError::Retryable {
                message,
                source: None,
            }) => Self::Conflict(message),
            DispatchError::Handler(HandlerError::Permanent {
                message,
                source: Some(source),
            }) if source.is::<IdConflict>() => Self::Conflict(message),
            DispatchError::Handler(HandlerError::Permanent {
                message,
                source: Some(source),
            }) if source.is::<NotTheOwner>() => Self::Forbidden(message),
            DispatchError::Handler(HandlerError::Permanent {
                message,
                source: None,
            }) => Self::Validation(vec![FieldError {
                field: String::new(),
                message,
            }]),
            DispatchError::Handler(HandlerError::Permanent {
                message,
                source: Some(source),
            }) if source.is::<ValidationErrors>() => Self::Validation(vec![FieldError {
                field: String::new(),
                message,
            }]),
            // A stored value the code cannot read: a fault of ours.
            DispatchError::Handler(HandlerError::Permanent {
                message,
                source: Some(source),
            }) if source.is::<StoreError>() => Self::Internal(message),
            // Data the database refused (a constraint, a value out of its
            // range): the client's to fix, in words of our own.
            DispatchError::Handler(HandlerError::Permanent {
                message,
                source: Some(_),
            }) => Self::Refused(message),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        match error {
            // Reads fail when their database does not answer; what the
            // driver said goes to the log, not to the client.
            QueryError::Failed(source) => match source.downcast_ref::<StoreError>() {
                Some(StoreError::Database(_)) | None => {
                    Self::DatabaseUnavailable(source.to_string())
                }
                // A stored value the code cannot read: retrying won't help.
                Some(other) => Self::Internal(other.to_string()),
            },
            other => Self::Internal(other.to_string()),
        }
    }
}
