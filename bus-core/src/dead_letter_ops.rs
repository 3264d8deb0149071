//! Operating on dead letters after the fact, whichever store keeps them: what
//! selects them, how they are described and counted, and how a replayed one
//! finds its way back to the one handler that gave up on it.
//!
//! The stores themselves are `DeadLetterTable` (the `bus_dead_letters`
//! table of an [`AsyncBus`](crate::AsyncBus), features `postgres`/`sqlite`)
//! and, in bus-rabbitmq, `DeadLetterQueues` (the `.dlq` queues). Both
//! describe a dead letter as a [`DeadLetterRecord`], pick them with a
//! [`DeadLetterSelector`] and count them with a [`Summary`].

use std::{collections::BTreeMap, fmt};

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::Envelope;

/// Envelope header carried by a replayed dead letter from the outbox to the
/// bus: it names the one handler the message goes back to
/// ([`Redelivery`]), so a command reaches its handler and an event only the
/// subscriber that gave up on it. The bus removes it before any handler
/// sees the envelope.
pub const REDELIVER_TO: &str = "bus-redeliver-to";

/// Where a replayed message goes back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redelivery {
    /// The handler of the command.
    Command,
    /// One subscriber of the event, by name.
    Subscriber(String),
}

impl Redelivery {
    /// The handler a dead letter of `subscriber` (`None`: a command) goes
    /// back to.
    pub fn of(subscriber: Option<&str>) -> Self {
        match subscriber {
            Some(name) => Self::Subscriber(name.to_owned()),
            None => Self::Command,
        }
    }

    /// The value of the [`REDELIVER_TO`] header: `command` or
    /// `subscriber:{name}`.
    pub fn header_value(&self) -> String {
        match self {
            Self::Command => "command".to_owned(),
            Self::Subscriber(name) => format!("subscriber:{name}"),
        }
    }

    /// Reads a [`REDELIVER_TO`] header value.
    pub fn parse(value: &str) -> Option<Self> {
        match value.split_once(':') {
            None if value == "command" => Some(Self::Command),
            Some(("subscriber", name)) if !name.is_empty() => {
                Some(Self::Subscriber(name.to_owned()))
            }
            _ => None,
        }
    }

    /// Adds the [`REDELIVER_TO`] header to `envelope`.
    pub fn mark(&self, envelope: &mut Envelope) {
        envelope
            .headers
            .insert(REDELIVER_TO.to_owned(), self.header_value());
    }

    /// Removes the [`REDELIVER_TO`] header from `envelope` and reads it:
    /// `None` if absent, `Some(Err(value))` if it names nothing known.
    pub fn take(envelope: &mut Envelope) -> Option<Result<Self, String>> {
        let value = envelope.headers.remove(REDELIVER_TO)?;
        Some(Self::parse(&value).ok_or(value))
    }
}

/// Which dead letters an operation applies to: every given criterion must
/// hold; none given selects every dead letter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterSelector {
    /// The message id (every copy of it: an event given up on by two
    /// subscribers is two dead letters).
    pub message_id: Option<Uuid>,
    /// The queue, as [`DeadLetterRecord::queue`] names it (a RabbitMQ store
    /// also accepts the name of the `.dlq` itself).
    pub queue: Option<String>,
    /// Text the reason contains (case-sensitive).
    pub reason: Option<String>,
}

impl DeadLetterSelector {
    /// Whether a dead letter of `queue` (also known as `alias`, e.g. its
    /// `.dlq`), `message_id` and `reason` is selected.
    pub fn matches(
        &self,
        queue: &str,
        alias: Option<&str>,
        message_id: Option<Uuid>,
        reason: &str,
    ) -> bool {
        let id_ok = self.message_id.is_none_or(|id| message_id == Some(id));
        let queue_ok = self
            .queue
            .as_deref()
            .is_none_or(|wanted| wanted == queue || Some(wanted) == alias);
        let reason_ok = self
            .reason
            .as_deref()
            .is_none_or(|text| reason.contains(text));
        id_ok && queue_ok && reason_ok
    }

    /// Whether it selects every dead letter.
    pub fn is_everything(&self) -> bool {
        self.message_id.is_none() && self.queue.is_none() && self.reason.is_none()
    }
}

impl fmt::Display for DeadLetterSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_everything() {
            return f.write_str("every dead letter");
        }
        let mut parts = Vec::new();
        if let Some(id) = self.message_id {
            parts.push(format!("message id {id}"));
        }
        if let Some(queue) = &self.queue {
            parts.push(format!("queue {queue}"));
        }
        if let Some(reason) = &self.reason {
            parts.push(format!("reason containing {reason:?}"));
        }
        f.write_str(&parts.join(", "))
    }
}

/// One dead letter as an operator sees it, from either store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterRecord {
    /// Where it failed: a RabbitMQ work queue, or for the database
    /// `command.{type}` / `event.{type}.{subscriber}`.
    pub queue: String,
    /// The message id, when the message has a readable one.
    pub message_id: Option<Uuid>,
    /// The message type, when known.
    pub message_type: Option<String>,
    /// Why it was given up on.
    pub reason: String,
    /// Deliveries attempted, when recorded.
    pub attempts: Option<u32>,
    /// When the message was created (its envelope's timestamp).
    pub created_at: Option<DateTime<Utc>>,
    /// When its first delivery failed, when recorded.
    pub first_failed_at: Option<DateTime<Utc>>,
    /// When it was given up on.
    pub dead_lettered_at: Option<DateTime<Utc>>,
    /// Its textual headers (envelope and transport headers).
    pub headers: BTreeMap<String, String>,
    /// The payload: JSON when it is JSON, else its text. Omitted by
    /// operations that only count or move messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Value>,
}

/// How [`Summary`] groups dead letters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupBy {
    /// One group per queue.
    #[default]
    Queue,
    /// One group per queue and reason.
    Reason,
}

/// How many dead letters share a queue (and a reason), and over what time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterGroup {
    /// The queue.
    pub queue: String,
    /// The reason, when grouping by reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How many.
    pub count: u64,
    /// The earliest dead-lettering time among them.
    pub oldest: Option<DateTime<Utc>>,
    /// The latest dead-lettering time among them.
    pub newest: Option<DateTime<Utc>>,
}

/// Counts dead letters into [`DeadLetterGroup`]s, one record at a time (so a
/// store can count a long queue without keeping it in memory).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    group_by: GroupBy,
    groups: BTreeMap<(String, Option<String>), DeadLetterGroup>,
}

impl Summary {
    /// An empty summary grouping by `group_by`.
    pub fn new(group_by: GroupBy) -> Self {
        Self {
            group_by,
            groups: BTreeMap::new(),
        }
    }

    /// Counts `record`.
    pub fn add(&mut self, record: &DeadLetterRecord) {
        let reason = match self.group_by {
            GroupBy::Queue => None,
            GroupBy::Reason => Some(record.reason.clone()),
        };
        let group = self
            .groups
            .entry((record.queue.clone(), reason.clone()))
            .or_insert_with(|| DeadLetterGroup {
                queue: record.queue.clone(),
                reason,
                count: 0,
                oldest: None,
                newest: None,
            });
        group.count += 1;
        if let Some(at) = record.dead_lettered_at {
            group.oldest = Some(group.oldest.map_or(at, |oldest| oldest.min(at)));
            group.newest = Some(group.newest.map_or(at, |newest| newest.max(at)));
        }
    }

    /// The groups, by queue then reason.
    pub fn groups(self) -> Vec<DeadLetterGroup> {
        self.groups.into_values().collect()
    }
}

/// The payload of a record: JSON when `bytes` are JSON, else their text.
pub fn payload_value(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(queue: &str, reason: &str, at: i64) -> DeadLetterRecord {
        DeadLetterRecord {
            queue: queue.to_owned(),
            message_id: Some(Uuid::new_v4()),
            message_type: None,
            reason: reason.to_owned(),
            attempts: Some(1),
            created_at: None,
            first_failed_at: None,
            dead_lettered_at: DateTime::from_timestamp(at, 0),
            headers: BTreeMap::new(),
            payload: None,
        }
    }

    #[test]
    fn the_redelivery_header_round_trips_and_refuses_what_it_does_not_know() {
        for target in [Redelivery::Command, Redelivery::Subscriber("search".into())] {
            assert_eq!(Redelivery::parse(&target.header_value()), Some(target));
        }
        assert_eq!(Redelivery::parse("subscriber:"), None);
        assert_eq!(Redelivery::parse("everyone"), None);
    }

    #[test]
    fn a_selector_needs_every_criterion_it_names() {
        let id = Uuid::new_v4();
        let selector = DeadLetterSelector {
            message_id: Some(id),
            queue: Some("q.dlq".into()),
            reason: Some("not found".into()),
        };
        assert!(selector.matches("q", Some("q.dlq"), Some(id), "book not found"));
        assert!(!selector.matches("q", Some("q.dlq"), Some(id), "invalid"));
        assert!(!selector.matches("other", None, Some(id), "book not found"));
        assert!(!selector.matches("q", None, None, "book not found"));
        assert!(DeadLetterSelector::default().matches("any", None, None, ""));
    }

    #[test]
    fn a_summary_counts_per_queue_or_per_reason_with_the_time_span() {
        let records = [
            record("a", "x", 30),
            record("a", "y", 10),
            record("b", "x", 20),
        ];
        let mut by_queue = Summary::new(GroupBy::Queue);
        let mut by_reason = Summary::new(GroupBy::Reason);
        for record in &records {
            by_queue.add(record);
            by_reason.add(record);
        }
        let groups = by_queue.groups();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].count, 2);
        assert_eq!(groups[0].oldest, DateTime::from_timestamp(10, 0));
        assert_eq!(groups[0].newest, DateTime::from_timestamp(30, 0));
        assert_eq!(by_reason.groups().len(), 3);
    }
}
