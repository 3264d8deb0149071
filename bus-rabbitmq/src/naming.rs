//! The one place exchange and queue names are made.
//!
//! | name | what |
//! |---|---|
//! | `{ns}.commands` | direct exchange for commands, routing key = message type |
//! | `{ns}.events` | direct exchange for events, routing key = message type |
//! | `{ns}.events.unrouted` | fanout alternate exchange of `{ns}.events`, and its queue |
//! | `{ns}.command.{Type}` | work queue of a command |
//! | `{ns}.event.{Type}.{subscriber}` | work queue of one subscriber of an event |
//! | `{queue}.retry.{delay_ms}ms` | delay queue of a work queue (TTL, dead-letters back) |
//! | `{queue}.dlq` | parking (dead-letter) queue of a work queue |

use std::time::Duration;

use lapin::types::ShortString;

use crate::RabbitError;

/// Makes every name of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Naming {
    namespace: String,
}

impl Naming {
    /// Names under `namespace` (e.g. `"marketplace"`).
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `{ns}.commands`: the direct exchange commands are sent to.
    pub fn commands_exchange(&self) -> String {
        format!("{}.commands", self.namespace)
    }

    /// `{ns}.events`: the direct exchange events are published to.
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.namespace)
    }

    /// `{ns}.events.unrouted`: the fanout alternate exchange of the events
    /// exchange, catching events nobody subscribed to.
    pub fn unrouted_exchange(&self) -> String {
        format!("{}.events.unrouted", self.namespace)
    }

    /// `{ns}.events.unrouted`: the queue keeping events nobody subscribed to.
    pub fn unrouted_queue(&self) -> String {
        format!("{}.events.unrouted", self.namespace)
    }

    /// `{ns}.command.{message_type}`: the work queue of a command.
    pub fn command_queue(&self, message_type: &str) -> String {
        format!("{}.command.{message_type}", self.namespace)
    }

    /// `{ns}.event.{message_type}.{subscriber}`: the work queue of one
    /// subscriber of an event.
    pub fn subscriber_queue(&self, message_type: &str, subscriber: &str) -> String {
        format!("{}.event.{message_type}.{subscriber}", self.namespace)
    }

    /// `{queue}.retry.{delay_ms}ms`: where a message of `queue` waits `delay`
    /// before flowing back to `queue`.
    pub fn retry_queue(queue: &str, delay: Duration) -> String {
        format!("{queue}.retry.{}ms", delay.as_millis())
    }

    /// `{queue}.dlq`: where messages of `queue` that cannot succeed are parked.
    pub fn dead_letter_queue(queue: &str) -> String {
        format!("{queue}.dlq")
    }
}

/// An AMQP short string (name, routing key), refused rather than truncated
/// or panicking when longer than 255 bytes.
pub(crate) fn short(name: &str) -> Result<ShortString, RabbitError> {
    ShortString::try_new(name).map_err(|error| RabbitError::InvalidName {
        name: name.to_owned(),
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_scheme() {
        let naming = Naming::new("shop");
        assert_eq!(naming.commands_exchange(), "shop.commands");
        assert_eq!(naming.events_exchange(), "shop.events");
        assert_eq!(naming.unrouted_exchange(), "shop.events.unrouted");
        assert_eq!(naming.unrouted_queue(), "shop.events.unrouted");
        let queue = naming.command_queue("shop.CreateOffer");
        assert_eq!(queue, "shop.command.shop.CreateOffer");
        assert_eq!(
            naming.subscriber_queue("shop.OfferCreated", "search"),
            "shop.event.shop.OfferCreated.search"
        );
        assert_eq!(
            Naming::retry_queue(&queue, Duration::from_millis(1500)),
            "shop.command.shop.CreateOffer.retry.1500ms"
        );
        assert_eq!(
            Naming::dead_letter_queue(&queue),
            "shop.command.shop.CreateOffer.dlq"
        );
    }

    #[test]
    fn names_longer_than_an_amqp_short_string_are_refused() {
        assert!(short(&"x".repeat(255)).is_ok());
        assert!(matches!(
            short(&"x".repeat(256)),
            Err(RabbitError::InvalidName { .. })
        ));
    }
}
