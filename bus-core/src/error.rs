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
    /// A dependency of the handler is unavailable (the database refuses
    /// connections, the pool timed out, a serialization conflict, the broker
    /// closed a channel): not the message's fault. Buses keep the message
    /// without counting an attempt, pause their consumers behind their
    /// [`CircuitBreaker`](crate::CircuitBreaker) and try it again once the
    /// dependency answers; it is never dead-lettered for this. An API on the
    /// sync bus answers `503 Service Unavailable`.
    #[error("{message}")]
    Infrastructure {
        /// What went wrong.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
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
/// New classes may be added, so match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// A business reason that may pass later (a prerequisite not there yet):
    /// retried while attempts remain, then dead-lettered.
    Retryable,
    /// Cannot pass (bad data, a constraint, an undecodable payload):
    /// dead-lettered at once.
    Permanent,
    /// A dependency is down: the message keeps its attempt, the consumer
    /// pauses until the dependency answers, and the message is tried again.
    /// Never dead-lettered.
    Infrastructure,
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

    /// A dependency is unavailable; see [`HandlerError::Infrastructure`].
    pub fn infrastructure(message: impl Into<String>) -> Self {
        Self::Infrastructure {
            message: message.into(),
            source: None,
        }
    }

    /// The class of this failure, which decides its settlement.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Retryable { .. } | Self::Panicked { .. } => FailureKind::Retryable,
            Self::Infrastructure { .. } => FailureKind::Infrastructure,
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
    /// Classified by [`database_failure_kind`]: the database being away never
    /// costs a message an attempt, and data it refuses is never retried.
    fn from(error: sqlx::Error) -> Self {
        let kind = database_failure_kind(&error);
        let message = format!("database error: {error}");
        let source: Option<BoxError> = Some(Box::new(error));
        match kind {
            FailureKind::Infrastructure => Self::Infrastructure { message, source },
            FailureKind::Permanent => Self::Permanent { message, source },
            _ => Self::Retryable { message, source },
        }
    }
}

/// How a database error is settled; the one table of it.
///
/// | error | kind |
/// |---|---|
/// | pool timed out or closed, I/O (refused, reset), TLS, protocol, worker crashed | [`FailureKind::Infrastructure`] |
/// | SQLSTATE class `08` (connection), `53` (insufficient resources), `57` (operator intervention: shutdown, admin termination) | [`FailureKind::Infrastructure`] |
/// | SQLSTATE `40001` (serialization failure), `40P01` (deadlock detected) | [`FailureKind::Infrastructure`] |
/// | SQLite `SQLITE_BUSY` (5), `SQLITE_LOCKED` (6), `SQLITE_IOERR` (10), `SQLITE_FULL` (13), `SQLITE_CANTOPEN` (14) | [`FailureKind::Infrastructure`] |
/// | SQLSTATE class `22` (data exception), `23` (integrity constraint) | [`FailureKind::Permanent`] |
/// | SQLite constraint violations (`SQLITE_CONSTRAINT`, 19 and its extended codes), `SQLITE_TOOBIG` (18), `SQLITE_MISMATCH` (20) | [`FailureKind::Permanent`] |
/// | a row that cannot be decoded, a missing column, a bad type | [`FailureKind::Permanent`] |
/// | anything else (a row not found: the prerequisite may come later) | [`FailureKind::Retryable`] |
///
/// Serialization failures and deadlocks are transient conflicts, not
/// business outcomes: the transaction is sound and passes when replayed, so
/// they must not use up the attempts a message has for business reasons (a
/// burst of contention would otherwise dead-letter valid writes). They take
/// the infrastructure path: kept, not counted, tried again once the breaker's
/// probe answers, which it does at once since the database is up.
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub fn database_failure_kind(error: &sqlx::Error) -> FailureKind {
    use sqlx::Error;
    match error {
        Error::PoolTimedOut
        | Error::PoolClosed
        | Error::Io(_)
        | Error::Tls(_)
        | Error::Protocol(_)
        | Error::WorkerCrashed
        | Error::BeginFailed => FailureKind::Infrastructure,
        Error::Database(database) => {
            let code = database.code();
            let code = code.as_deref().unwrap_or_default();
            sqlstate_kind(code)
        }
        Error::ColumnNotFound(_)
        | Error::ColumnIndexOutOfBounds { .. }
        | Error::ColumnDecode { .. }
        | Error::TypeNotFound { .. }
        | Error::Decode(_)
        | Error::Encode(_) => FailureKind::Permanent,
        _ => FailureKind::Retryable,
    }
}

/// A database's error code to a [`FailureKind`]: a five-character SQLSTATE
/// (PostgreSQL) or a SQLite result code (primary or extended, as digits).
#[cfg(any(feature = "postgres", feature = "sqlite"))]
fn sqlstate_kind(code: &str) -> FailureKind {
    // SQLite's codes stay below 10 000, so five characters is a SQLSTATE.
    if code.len() == 5 {
        return match &code[..2] {
            "08" | "53" | "57" => FailureKind::Infrastructure,
            "40" if code == "40001" || code == "40P01" => FailureKind::Infrastructure,
            "22" | "23" => FailureKind::Permanent,
            _ => FailureKind::Retryable,
        };
    }
    // SQLite: the primary result code is the low byte of the extended one.
    match code.parse::<u32>().map(|extended| extended & 0xff) {
        Ok(5 | 6 | 10 | 13 | 14) => FailureKind::Infrastructure,
        Ok(18..=20) => FailureKind::Permanent,
        _ => FailureKind::Retryable,
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
    /// Whether the caller may simply try again later (maps to `503`): the
    /// bus or the transport cannot take it, or (sync bus) the handler failed
    /// on an infrastructure error.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Saturated { .. }
            | Self::ShuttingDown
            | Self::Unavailable { .. }
            | Self::Refused { .. } => true,
            Self::Handler(error) => error.kind() == FailureKind::Infrastructure,
            _ => false,
        }
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
