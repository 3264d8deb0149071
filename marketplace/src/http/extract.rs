//! Extractors that turn axum's rejections into problem+json and validate
//! input, so a route handler only ever sees well-formed, valid data.

use axum::{
    extract::{FromRequest, FromRequestParts, Path, Query, Request},
    http::request::Parts,
    Json,
};
use bus_core::TraceContext;
use serde::de::DeserializeOwned;
use uuid::Uuid;
use validator::Validate;

use super::{edge::RequestTrace, error::ApiError};

/// A JSON body, deserialized (`400`/`413`/`415` on failure) then validated
/// (`422` on failure).
#[derive(Debug)]
pub struct ValidJson<T>(pub T);

impl<S, T> FromRequest<S> for ValidJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(request, state).await?;
        value.validate()?;
        Ok(Self(value))
    }
}

/// A query string, deserialized (`400`) then validated (`422`).
#[derive(Debug)]
pub struct ValidQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ValidQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        value.validate()?;
        Ok(Self(value))
    }
}

/// The UUID in a path like `/books/{id}` (`400` when malformed).
#[derive(Debug, Clone, Copy)]
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<Uuid>::from_request_parts(parts, state).await?;
        Ok(Self(id))
    }
}

/// The request's trace context ([`RequestTrace`]): a child of the caller's
/// W3C `traceparent` when it sent a well-formed one, else a new trace, so
/// the commands a request dispatches continue the request's trace.
#[derive(Debug, Clone, Copy)]
pub struct TraceParent(pub Option<TraceContext>);

impl<S: Send + Sync> FromRequestParts<S> for TraceParent {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let trace = match parts.extensions.get::<RequestTrace>() {
            Some(trace) => *trace,
            None => RequestTrace::of(&parts.headers),
        };
        Ok(Self(Some(trace.context)))
    }
}
