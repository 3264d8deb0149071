//! Errors of the bus, each documented with how an HTTP API should answer it.

use std::error::Error as StdError;

/// A boxed error from application code.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A message could not be turned into JSON.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode {message_type}: {source}")]
pub struct EncodeError {
    /// Wire name of the message.
    pub message_type: &'static str,
    /// What serde said.
    #[source]
    pub source: serde_json::Error,
}

/// Why a handler failed. The variant decides what a bus does next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlerError {
    /// May succeed later (a prerequisite not there yet, the database
    /// unreachable): async buses retry it with backoff, then dead-letter it.
    /// An API on the sync bus answers `409 Conflict`.
    #[error("{message}")]
    Retryable {
        /// What went wrong, for logs and the dead-letter record.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// Will never succeed: dead-lettered at once, never retried.
    /// An API on the sync bus answers `422 Unprocessable Content`.
    #[error("{message}")]
    Permanent {
        /// What went wrong.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The payload is not a valid message of its type (a poison message):
    /// dead-lettered at once. An API answers `400`-class errors before this
    /// can happen, so seeing it means a producer is broken.
    #[error("cannot decode {message_type}: {source}")]
    Decode {
        /// Wire name found in the envelope.
        message_type: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// No handler is registered for this type on the consuming side (a
    /// producer is newer than the consumer): dead-lettered at once.
    #[error("no handler for message type {message_type}")]
    UnknownType {
        /// Wire name found in the envelope.
        message_type: String,
    },
    /// The envelope's payload version is newer than the consumer's
    /// [`Message::VERSION`](crate::Message::VERSION), or older with no
    /// upcaster to bring it up to date: dead-lettered at once, since the
    /// consumer would misread it.
    #[error("{message_type} version {version} is not supported: {reason}")]
    UnsupportedVersion {
        /// Wire name found in the envelope.
        message_type: String,
        /// Version found in the envelope.
        version: u32,
        /// Why it cannot be read.
        reason: String,
    },
    /// The handler (or a middleware around it) panicked. A panic is a bug,
    /// but it may depend on state that changes (a race, a flaky dependency),
    /// so it is classified [`FailureKind::Retryable`]: async buses retry it
    /// and dead-letter it once the attempts are spent. An API on the sync bus
    /// answers `500`.
    #[error("handler panicked: {message}")]
    Panicked {
        /// The panic payload, when it was a string.
        message: String,
    },
}

/// How the settlement treats a failure; see [`HandlerError::kind`].
///
/// New classes may be added (e.g. infrastructure failures that do not
/// consume attempts), so match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// May pass later: retried while attempts remain, then dead-lettered.
    Retryable,
    /// Cannot pass: dead-lettered at once.
    Permanent,
}

impl HandlerError {
    /// A failure worth retrying later.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable {
            message: message.into(),
            source: None,
        }
    }

    /// A failure that retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent {
            message: message.into(),
            source: None,
        }
    }

    /// The class of this failure, which decides its settlement.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Retryable { .. } | Self::Panicked { .. } => FailureKind::Retryable,
            Self::Permanent { .. }
            | Self::Decode { .. }
            | Self::UnknownType { .. }
            | Self::UnsupportedVersion { .. } => FailureKind::Permanent,
        }
    }

    /// Whether a bus should try the message again.
    pub fn is_retryable(&self) -> bool {
        self.kind() == FailureKind::Retryable
    }
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl From<sqlx::Error> for HandlerError {
    /// Database errors are treated as transient: a retry after a failover or
    /// a deadlock usually succeeds, and the retry budget bounds the rest.
    fn from(error: sqlx::Error) -> Self {
        Self::Retryable {
            message: format!("database error: {error}"),
            source: Some(Box::new(error)),
        }
    }
}

/// A command or event could not be accepted by a bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// No handler is registered for the command. A programming error:
    /// `500 Internal Server Error`.
    #[error("no handler registered for {message_type}")]
    NoHandler {
        /// Wire name of the command.
        message_type: String,
    },
    /// The message could not be serialized: `500`.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The bus is at capacity; try again shortly: `503 Service Unavailable`.
    #[error("the bus is saturated ({capacity} messages in flight)")]
    Saturated {
        /// The bound that was hit.
        capacity: usize,
    },
    /// The bus is shutting down and accepts nothing new: `503`.
    #[error("the bus is shutting down")]
    ShuttingDown,
    /// The transport cannot take the message right now (broker unreachable,
    /// confirm not received in time): `503`. The message was not accepted.
    #[error("transport unavailable: {reason}")]
    Unavailable {
        /// What the transport saw.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The broker refused the message (negative confirm, unroutable): `503`,
    /// and an operator should look at the topology.
    #[error("the broker refused the message: {reason}")]
    Refused {
        /// What the broker said.
        reason: String,
    },
    /// Sync bus only: the handler ran and failed. See [`HandlerError`] for the
    /// status to answer.
    #[error(transparent)]
    Handler(#[from] HandlerError),
}

impl DispatchError {
    /// Whether the caller may simply try again later (maps to `503`).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Saturated { .. }
                | Self::ShuttingDown
                | Self::Unavailable { .. }
                | Self::Refused { .. }
        )
    }
}

/// Building a set of handlers failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// A command may have exactly one handler.
    #[error("command {message_type} already has a handler")]
    DuplicateCommandHandler {
        /// Wire name of the command.
        message_type: String,
    },
    /// Subscriber names must be unique per event: they name queues.
    #[error("event {message_type} already has a subscriber named {subscriber}")]
    DuplicateSubscriber {
        /// Wire name of the event.
        message_type: String,
        /// The repeated subscriber name.
        subscriber: String,
    },
    /// A query may have exactly one handler.
    #[error("query {query} already has a handler")]
    DuplicateQueryHandler {
        /// Rust type name of the query.
        query: &'static str,
    },
    /// A message may have one upcaster per version it reads.
    #[error("message {message_type} already has an upcaster from version {from_version}")]
    DuplicateUpcaster {
        /// Wire name of the message.
        message_type: String,
        /// The version read by both upcasters.
        from_version: u32,
    },
    /// A subscriber name must be non-empty ASCII letters, digits, `-`, `_` or `.`.
    #[error("invalid subscriber name {0:?}")]
    InvalidSubscriberName(String),
}

/// A query could not be answered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// No handler is registered for the query: `500`.
    #[error("no handler registered for query {query}")]
    NoHandler {
        /// Rust type name of the query.
        query: &'static str,
    },
    /// The handler failed (e.g. the database is unreachable): `503` or `500`.
    #[error("query failed: {0}")]
    Failed(#[source] BoxError),
}

#[cfg(any(feature = "postgres", feature = "sqlite"))]
impl From<sqlx::Error> for QueryError {
    fn from(error: sqlx::Error) -> Self {
        Self::Failed(Box::new(error))
    }
}
