//! `traceparent`: every request is a span of a W3C trace — the caller's,
//! when it sent a well-formed `traceparent`, else a new one. The request's
//! tracing span holds its `trace_id` and `span_id` (and the caller's span as
//! `parent_span_id`), and the commands it dispatches carry the request's
//! span as their `traceparent`, so the worker's lines for them, and for the
//! events their handlers raise, share the request's `trace_id`.

use axum::extract::Request;
use bus_core::{TraceContext, TRACEPARENT};

/// The trace context of one request, in its extensions.
#[derive(Debug, Clone, Copy)]
pub struct RequestTrace {
    /// The request's own span: the caller's trace id (or a new one) and a
    /// new span id.
    pub context: TraceContext,
    /// The caller's span, from its `traceparent` header.
    pub parent: Option<TraceContext>,
}

impl RequestTrace {
    /// The trace of a request with these headers: a child of a well-formed
    /// `traceparent`, else a new trace.
    pub fn of(headers: &axum::http::HeaderMap) -> Self {
        let parent: Option<TraceContext> = headers
            .get(TRACEPARENT)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        let context = parent
            .map(|parent| parent.child())
            .unwrap_or_else(TraceContext::new_root);
        Self { context, parent }
    }
}

/// Gives the request its [`RequestTrace`] (before its span is made).
pub fn start(mut request: Request) -> Request {
    let trace = RequestTrace::of(request.headers());
    request.extensions_mut().insert(trace);
    request
}
