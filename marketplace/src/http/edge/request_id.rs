//! `x-request-id`: every answer carries one, the client's own when it sent
//! a sane short token, else a fresh UUID; the request's tracing span holds
//! it as `request_id`, so every log line of the request (the one of a `5xx`
//! included) can be found from what the client saw.

use axum::{
    extract::Request,
    http::{HeaderName, HeaderValue},
};
use tracing::{field::display, Span};

use super::{client_ip::ClientIp, trace::RequestTrace};

/// The header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest client-chosen request id that is kept.
pub const MAX_LENGTH: usize = 64;

/// The header's name.
pub fn header_name() -> HeaderName {
    HeaderName::from_static(REQUEST_ID)
}

/// Whether a client's request id is kept: 1 to [`MAX_LENGTH`] characters
/// among letters, digits and `-_.:+/=@` (UUIDs, ULIDs, trace ids, base64);
/// anything else (spaces, control characters, long values) could forge or
/// flood log lines and is replaced.
pub fn is_sane(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LENGTH
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(b))
}

/// Drops a client's request id that is not [sane](is_sane), so that
/// `SetRequestId` makes a fresh one; a repeated header is dropped too.
pub fn drop_insane(mut request: Request) -> Request {
    let headers = request.headers_mut();
    let mut values = headers.get_all(REQUEST_ID).iter();
    let keep = matches!((values.next(), values.next()), (Some(value), None) if is_sane(value));
    if !keep {
        headers.remove(REQUEST_ID);
    }
    request
}

/// The request's span: method, path, request id, client address (see
/// [`client_ip`](super::client_ip)) and trace (`trace_id`, `span_id`,
/// `parent_span_id`: see [`trace`](super::trace)), at `INFO` so that its
/// fields are on every line the request logs at the default level.
pub fn span(request: &Request) -> Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    // The trace's fields are given at creation: an exporter of spans reads
    // them there (see `telemetry`).
    let trace = request.extensions().get::<RequestTrace>();
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        uri = %request.uri(),
        request_id = %request_id,
        client_ip = tracing::field::Empty,
        trace_id = trace.map(|trace| display(trace.context.trace_id_hex())),
        span_id = trace.map(|trace| display(trace.context.span_id_hex())),
        parent_span_id = trace
            .and_then(|trace| trace.parent)
            .map(|parent| display(parent.span_id_hex())),
        trace_flags = trace.map(|trace| display(trace.context.flags_hex())),
    );
    if let Some(ClientIp(client)) = request.extensions().get::<ClientIp>() {
        span.record("client_ip", display(client));
    }
    span
}
