//! The three kinds of messages an application exchanges.

use serde::{de::DeserializeOwned, Serialize};

/// Something that travels in an [`Envelope`](crate::Envelope): it has a stable
/// name on the wire and a JSON form.
///
/// The name, not the Rust type path, identifies the message between
/// processes, so renaming a Rust type never breaks a queue. Keep it stable;
/// bump [`Message::VERSION`] when the payload changes incompatibly.
pub trait Message: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Wire name, unique among an application's messages, e.g.
    /// `"marketplace.CreateOffer"`. Transports derive queue names from it.
    const NAME: &'static str;
    /// Payload schema version, carried in the envelope.
    const VERSION: u32 = 1;
}

/// A request to change state, handled by exactly one [`CommandHandler`](crate::CommandHandler).
pub trait Command: Message {}

/// A fact that happened, delivered to every subscribed [`EventHandler`](crate::EventHandler).
pub trait Event: Message {}

/// A question answered synchronously, in-process, by one
/// [`QueryHandler`](crate::QueryHandler).
pub trait Query: Send + 'static {
    /// The answer.
    type Output: Send + 'static;
}
