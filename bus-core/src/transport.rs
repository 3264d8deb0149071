//! What a transport needs to run handlers: the registered handlers with
//! their shared invocation, the settlement policy, and envelope assembly
//! from received parts.
//!
//! A transport (the in-memory buses here, `bus-rabbitmq` outside) does, per
//! delivery:
//!
//! 1. rebuild the [`Envelope`] ([`envelope_from_parts`]);
//! 2. find the [`RegisteredHandler`] ([`Handlers::command`](crate::Handlers::command),
//!    [`Handlers::subscribers`](crate::Handlers::subscribers));
//! 3. run it with [`RegisteredHandler::invoke`] (span, panic catching,
//!    middleware, upcasting, decoding);
//! 4. apply [`decide`]'s [`Settlement`] in its own terms.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::Envelope;

pub use crate::registry::{RegisteredHandler, Subscription};
pub use crate::settlement::{decide, settle_span, Settlement};

/// Builds an envelope from parts received from a transport, as they were
/// sent: no new id, no new trace context.
pub fn envelope_from_parts(
    id: Uuid,
    message_type: impl Into<String>,
    version: u32,
    timestamp: DateTime<Utc>,
    headers: BTreeMap<String, String>,
    payload: Box<RawValue>,
) -> Envelope {
    Envelope {
        id,
        message_type: message_type.into(),
        version,
        timestamp,
        headers,
        payload,
    }
}
