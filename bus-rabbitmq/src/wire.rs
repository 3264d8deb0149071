//! How an [`Envelope`] travels over AMQP, and back.
//!
//! | envelope | AMQP |
//! |---|---|
//! | `id` | `message_id` property |
//! | `message_type` | `type` property (and the routing key) |
//! | `version` | `x-version` header |
//! | `timestamp` | `timestamp` property (seconds) and `x-timestamp` header (RFC 3339, exact) |
//! | `headers` | one string header each |
//! | `payload` | body, JSON bytes, `content_type` `application/json` |
//!
//! Every message is persistent (`delivery_mode` 2) and carries `x-attempt`,
//! the delivery attempt it is on (1 for a fresh publish).

use std::collections::BTreeMap;

use bus_core::Envelope;
use chrono::{DateTime, Utc};
use lapin::{
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties,
};
use serde_json::value::RawValue;
use uuid::Uuid;

/// Names of the headers this crate sets.
pub mod headers {
    /// Payload schema version of the envelope.
    pub const VERSION: &str = "x-version";
    /// Exact creation time of the envelope (RFC 3339).
    pub const TIMESTAMP: &str = "x-timestamp";
    /// Delivery attempt this copy is for, starting at 1.
    pub const ATTEMPT: &str = "x-attempt";
    /// On a retried copy: the error of the previous attempt.
    pub const LAST_ERROR: &str = "x-last-error";
    /// On a dead letter: why it was given up on.
    pub const ERROR: &str = "x-error";
    /// On a dead letter: how many attempts were made.
    pub const ATTEMPTS: &str = "x-attempts";
    /// On a dead letter: the work queue it came from.
    pub const ORIGINAL_QUEUE: &str = "x-original-queue";
    /// On a dead letter: when it was parked (RFC 3339).
    pub const DEAD_LETTERED_AT: &str = "x-dead-lettered-at";
    /// On a retried copy or a dead letter: when its first delivery failed
    /// (RFC 3339).
    pub const FIRST_FAILED_AT: &str = "x-first-failed-at";
}

/// The AMQP `delivery_mode` of a message written to disk.
pub const PERSISTENT: u8 = 2;
/// The `content_type` of every body.
pub const CONTENT_TYPE: &str = "application/json";

/// Transport headers, not envelope headers: never copied into an envelope.
pub(crate) fn is_transport_header(name: &str) -> bool {
    [
        headers::VERSION,
        headers::TIMESTAMP,
        headers::ATTEMPT,
        headers::LAST_ERROR,
        headers::ERROR,
        headers::ATTEMPTS,
        headers::ORIGINAL_QUEUE,
        headers::DEAD_LETTERED_AT,
        headers::FIRST_FAILED_AT,
    ]
    .contains(&name)
        || name.starts_with("x-death")
        || name.starts_with("x-first-death")
        || name.starts_with("x-last-death")
        || name == "x-delivery-count"
}

/// Why a delivery is not a message this crate can hand to a handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The `message_id` property is missing.
    #[error("missing message_id property")]
    MissingMessageId,
    /// The `message_id` property is not a UUID.
    #[error("message_id {0:?} is not a UUID")]
    InvalidMessageId(String),
    /// The `type` property is missing.
    #[error("missing type property")]
    MissingType,
    /// The body is not a JSON document.
    #[error("body is not JSON: {0}")]
    InvalidBody(String),
}

/// A header name that does not fit AMQP (longer than 255 bytes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("header name {0:?} is longer than 255 bytes")]
pub struct InvalidHeader(pub String);

/// The AMQP properties and body of `envelope` on delivery `attempt`.
pub fn encode(
    envelope: &Envelope,
    attempt: u32,
) -> Result<(BasicProperties, Vec<u8>), InvalidHeader> {
    let mut table = FieldTable::default();
    for (name, value) in &envelope.headers {
        let key = ShortString::try_new(name.as_str()).map_err(|_| InvalidHeader(name.clone()))?;
        table.insert(key, AMQPValue::LongString(LongString::from(value.as_str())));
    }
    table.insert(
        headers::VERSION.into(),
        AMQPValue::LongUInt(envelope.version),
    );
    table.insert(
        headers::TIMESTAMP.into(),
        AMQPValue::LongString(LongString::from(envelope.timestamp.to_rfc3339())),
    );
    table.insert(headers::ATTEMPT.into(), AMQPValue::LongUInt(attempt));
    let properties = BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_message_id(envelope.id.to_string().into())
        .with_type(
            ShortString::try_new(envelope.message_type.as_str())
                .map_err(|_| InvalidHeader(format!("type {}", envelope.message_type)))?,
        )
        .with_content_type(CONTENT_TYPE.into())
        .with_timestamp(u64::try_from(envelope.timestamp.timestamp()).unwrap_or(0))
        .with_headers(table);
    Ok((properties, envelope.payload.get().as_bytes().to_vec()))
}

/// The envelope in a delivery's properties and body.
pub fn decode(properties: &BasicProperties, body: &[u8]) -> Result<Envelope, DecodeError> {
    let id = properties
        .message_id()
        .as_ref()
        .ok_or(DecodeError::MissingMessageId)?;
    let id =
        Uuid::parse_str(id.as_str()).map_err(|_| DecodeError::InvalidMessageId(id.to_string()))?;
    let message_type = properties
        .kind()
        .as_ref()
        .ok_or(DecodeError::MissingType)?
        .to_string();
    let payload: Box<RawValue> = serde_json::from_slice(body)
        .map_err(|error| DecodeError::InvalidBody(error.to_string()))?;
    let table = properties.headers().clone().unwrap_or_default();
    let version = header_u32(&table, headers::VERSION).unwrap_or(1);
    let timestamp = header_string(&table, headers::TIMESTAMP)
        .and_then(|value| DateTime::parse_from_rfc3339(&value).ok())
        .map(|at| at.with_timezone(&Utc))
        .or_else(|| {
            properties
                .timestamp()
                .and_then(|seconds| i64::try_from(seconds).ok())
                .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
        })
        .unwrap_or_else(Utc::now);
    let mut envelope_headers = BTreeMap::new();
    for (name, value) in &table {
        if is_transport_header(name.as_str()) {
            continue;
        }
        if let Some(value) = as_string(value) {
            envelope_headers.insert(name.to_string(), value);
        }
    }
    Ok(bus_core::transport::envelope_from_parts(
        id,
        message_type,
        version,
        timestamp,
        envelope_headers,
        payload,
    ))
}

/// The delivery attempt recorded in `properties` (1 when absent).
pub fn attempt(properties: &BasicProperties) -> u32 {
    properties
        .headers()
        .as_ref()
        .and_then(|table| header_u32(table, headers::ATTEMPT))
        .unwrap_or(1)
        .max(1)
}

/// A string header of `table`, if present and textual.
pub fn header_string(table: &FieldTable, name: &str) -> Option<String> {
    table.inner().get(name).and_then(as_string)
}

/// An integer header of `table` that fits a `u32`.
pub fn header_u32(table: &FieldTable, name: &str) -> Option<u32> {
    let value = table.inner().get(name)?;
    let number: i128 = match value {
        AMQPValue::ShortShortInt(v) => (*v).into(),
        AMQPValue::ShortShortUInt(v) => (*v).into(),
        AMQPValue::ShortInt(v) => (*v).into(),
        AMQPValue::ShortUInt(v) => (*v).into(),
        AMQPValue::LongInt(v) => (*v).into(),
        AMQPValue::LongUInt(v) => (*v).into(),
        AMQPValue::LongLongInt(v) => (*v).into(),
        AMQPValue::Timestamp(v) => (*v).into(),
        other => as_string(other)?.trim().parse().ok()?,
    };
    u32::try_from(number).ok()
}

fn as_string(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Ping {
        n: u32,
    }
    impl bus_core::Message for Ping {
        const NAME: &'static str = "test.Ping";
        const VERSION: u32 = 3;
    }

    #[test]
    fn an_envelope_survives_the_round_trip_through_amqp_properties() {
        let envelope = Envelope::new(&Ping { n: 7 })
            .unwrap()
            .with_header("tenant", "acme");
        let (properties, body) = encode(&envelope, 2).unwrap();
        assert_eq!(*properties.delivery_mode(), Some(PERSISTENT));
        assert_eq!(attempt(&properties), 2);
        let back = decode(&properties, &body).unwrap();
        assert_eq!(back.id, envelope.id);
        assert_eq!(back.message_type, "test.Ping");
        assert_eq!(back.version, 3);
        assert_eq!(back.timestamp, envelope.timestamp);
        assert_eq!(back.headers, envelope.headers);
        assert_eq!(back.payload.get(), envelope.payload.get());
    }

    #[test]
    fn deliveries_without_id_type_or_json_body_are_refused() {
        let envelope = Envelope::new(&Ping { n: 1 }).unwrap();
        let (properties, body) = encode(&envelope, 1).unwrap();
        assert!(matches!(
            decode(&properties, b"not json").unwrap_err(),
            DecodeError::InvalidBody(_)
        ));
        assert_eq!(
            decode(&BasicProperties::default(), &body).unwrap_err(),
            DecodeError::MissingMessageId
        );
        let no_type = BasicProperties::default().with_message_id(envelope.id.to_string().into());
        assert_eq!(
            decode(&no_type, &body).unwrap_err(),
            DecodeError::MissingType
        );
    }
}
