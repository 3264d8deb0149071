//! The transport-neutral message envelope.
//!
//! Its [`TRACEPARENT`] header names the span the message was sent from: an
//! HTTP request's span for a command an API sends
//! ([`Envelope::with_trace_context`]), the handler's span for an event a
//! handler raises ([`MessageContext::event_envelope`]). So every message
//! of one request shares its trace id, and each one's handling (a span of
//! its own, [`MessageContext::trace`]) is a child of the span that sent it.
//!
//! [`MessageContext::event_envelope`]: crate::MessageContext::event_envelope
//! [`MessageContext::trace`]: crate::MessageContext::trace

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::{error::EncodeError, Message};

/// Header holding the W3C `traceparent` of the message.
pub const TRACEPARENT: &str = "traceparent";
/// Header holding the id of the first message of a conversation.
pub const CORRELATION_ID: &str = "correlation-id";
/// Header holding the id of the message whose handler produced this one.
pub const CAUSATION_ID: &str = "causation-id";

/// A command or event on its way: metadata plus JSON payload.
///
/// Every transport carries exactly these fields (the RabbitMQ transport maps
/// them onto AMQP properties), so an envelope can be stored, relayed and
/// re-published without knowing the Rust type inside.
///
/// ```
/// # use bus_core::{Envelope, Message, Command};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Ping { n: u32 }
/// impl Message for Ping { const NAME: &'static str = "example.Ping"; }
/// impl Command for Ping {}
///
/// let envelope = Envelope::new(&Ping { n: 1 }).unwrap();
/// assert_eq!(envelope.message_type, "example.Ping");
/// assert_eq!(envelope.decode::<Ping>().unwrap().n, 1);
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique id of this message (UUID v7: sortable by creation time).
    pub id: Uuid,
    /// Wire name of the payload's type ([`Message::NAME`]).
    #[serde(rename = "type")]
    pub message_type: String,
    /// Payload schema version ([`Message::VERSION`]).
    pub version: u32,
    /// When the message was created.
    pub timestamp: DateTime<Utc>,
    /// Free-form string headers: trace context, correlation and causation ids.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The message itself, as JSON.
    pub payload: Box<RawValue>,
}

impl Envelope {
    /// Wraps a message in a new envelope with a fresh id and trace context.
    pub fn new<M: Message>(message: &M) -> Result<Self, EncodeError> {
        Self::new_in_trace(message, &TraceContext::new_root())
    }

    /// Wraps a message in a new envelope with a fresh id, sent from span
    /// `context` (its `traceparent`): the same as
    /// `Envelope::new(message)?.with_trace_context(context)` without making
    /// a root context first.
    pub fn new_in_trace<M: Message>(
        message: &M,
        context: &TraceContext,
    ) -> Result<Self, EncodeError> {
        let payload = serde_json::value::to_raw_value(message).map_err(|source| EncodeError {
            message_type: M::NAME,
            source,
        })?;
        let id = Uuid::now_v7();
        let mut headers = BTreeMap::new();
        headers.insert(TRACEPARENT.to_owned(), context.to_string());
        headers.insert(CORRELATION_ID.to_owned(), id.to_string());
        Ok(Self {
            id,
            message_type: M::NAME.to_owned(),
            version: M::VERSION,
            timestamp: Utc::now(),
            headers,
            payload,
        })
    }

    /// Decodes the payload as `M`.
    pub fn decode<M: Message>(&self) -> Result<M, serde_json::Error> {
        serde_json::from_str(self.payload.get())
    }

    /// Makes this message a consequence of `cause`: same correlation id and
    /// trace, `cause` as causation id, a new span id.
    pub fn caused_by(mut self, cause: &Envelope) -> Self {
        let correlation = cause
            .headers
            .get(CORRELATION_ID)
            .cloned()
            .unwrap_or_else(|| cause.id.to_string());
        self.headers.insert(CORRELATION_ID.to_owned(), correlation);
        self.headers
            .insert(CAUSATION_ID.to_owned(), cause.id.to_string());
        if let Some(parent) = cause.trace_context() {
            self.headers
                .insert(TRACEPARENT.to_owned(), parent.child().to_string());
        }
        self
    }

    /// Continues an incoming trace (e.g. an HTTP `traceparent` header): the
    /// same trace id, a new span id.
    pub fn with_trace_parent(mut self, parent: &TraceContext) -> Self {
        self.headers
            .insert(TRACEPARENT.to_owned(), parent.child().to_string());
        self
    }

    /// Sets the `traceparent` to `context` as it is: the span this message
    /// is sent from (e.g. the HTTP request's span, or the handler's span
    /// that raised an event).
    pub fn with_trace_context(mut self, context: &TraceContext) -> Self {
        self.headers
            .insert(TRACEPARENT.to_owned(), context.to_string());
        self
    }

    /// Sets a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// The trace context in the `traceparent` header, if any and well formed.
    pub fn trace_context(&self) -> Option<TraceContext> {
        self.headers.get(TRACEPARENT).and_then(|v| v.parse().ok())
    }

    /// The correlation id header, if any.
    pub fn correlation_id(&self) -> Option<&str> {
        self.headers.get(CORRELATION_ID).map(String::as_str)
    }
}

/// A W3C trace context (`traceparent`: version, trace id, parent span id, flags).
///
/// Enough to propagate a trace across processes; exporting spans is left to
/// the application's tracing setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16-byte trace id shared by every message of one request.
    pub trace_id: u128,
    /// 8-byte id of the span that sent the message.
    pub span_id: u64,
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceContext {
    /// A new trace, sampled.
    pub fn new_root() -> Self {
        let random = Uuid::new_v4().as_u128();
        Self {
            trace_id: random,
            span_id: (random >> 64) as u64 ^ random as u64,
            flags: 1,
        }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        Self {
            span_id: Uuid::new_v4().as_u64_pair().0,
            ..*self
        }
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }

    /// The flags as 2 lowercase hex digits (`01`: sampled), as a span's
    /// `trace_flags` field carries them for an exporter.
    pub fn flags_hex(&self) -> String {
        format!("{:02x}", self.flags)
    }

    /// Whether the trace is sampled (flag bit 0): a span exporter drops the
    /// spans of a trace that is not.
    pub fn is_sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

impl std::fmt::Display for TraceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

impl std::str::FromStr for TraceContext {
    type Err = InvalidTraceParent;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.trim().split('-');
        let (Some(version), Some(trace), Some(span), Some(flags), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(InvalidTraceParent);
        };
        if version.len() != 2 || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return Err(InvalidTraceParent);
        }
        let trace_id = u128::from_str_radix(trace, 16).map_err(|_| InvalidTraceParent)?;
        let span_id = u64::from_str_radix(span, 16).map_err(|_| InvalidTraceParent)?;
        let flags = u8::from_str_radix(flags, 16).map_err(|_| InvalidTraceParent)?;
        if trace_id == 0 || span_id == 0 {
            return Err(InvalidTraceParent);
        }
        Ok(Self {
            trace_id,
            span_id,
            flags,
        })
    }
}

/// A `traceparent` value that is not of the W3C form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent")]
pub struct InvalidTraceParent;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_children_keep_the_trace() {
        let root = TraceContext::new_root();
        let parsed: TraceContext = root.to_string().parse().unwrap();
        assert_eq!(parsed, root);
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
    }

    #[test]
    fn malformed_traceparents_are_refused() {
        for bad in [
            "",
            "00-abc",
            "00-0000-0000-01",
            "zz-00000000000000000000000000000001-0000000000000001-01-x",
        ] {
            assert!(bad.parse::<TraceContext>().is_err(), "{bad}");
        }
    }
}
