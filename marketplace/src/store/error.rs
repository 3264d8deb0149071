//! What can go wrong in the store, and how handlers and queries see it.

use bus_core::{HandlerError, QueryError};

use crate::model::UnknownStatus;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// A stored value cannot be represented (e.g. a malformed timestamp).
    #[error("invalid stored value: {0}")]
    Invalid(String),
    /// The event to stage could not be encoded.
    #[error("cannot encode event: {0}")]
    Encode(#[from] bus_core::EncodeError),
}

/// Counter: queries and commands of the store that gave up waiting for a
/// pooled connection (the pool's acquire timeout).
pub const POOL_TIMEOUTS: &str = "db_client_connection_timeouts_total";

impl From<sqlx::Error> for StoreError {
    /// Counts a wait for a connection that ran out ([`POOL_TIMEOUTS`]).
    fn from(error: sqlx::Error) -> Self {
        if matches!(error, sqlx::Error::PoolTimedOut) {
            metrics::counter!(POOL_TIMEOUTS).increment(1);
        }
        StoreError::Database(error)
    }
}

impl From<UnknownStatus> for StoreError {
    fn from(error: UnknownStatus) -> Self {
        StoreError::Invalid(error.to_string())
    }
}

impl From<StoreError> for HandlerError {
    /// Database errors are classified by bus-core
    /// (`bus_core::database_failure_kind`): the database away is
    /// infrastructure (the consumer pauses, no attempt is used), data it
    /// refuses is permanent. A stored value that cannot be read or an event
    /// that cannot be encoded is permanent.
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Database(error) => error.into(),
            // The source tells the HTTP edge this is no client's doing.
            other => HandlerError::Permanent {
                message: other.to_string(),
                source: Some(Box::new(other)),
            },
        }
    }
}

impl From<StoreError> for QueryError {
    fn from(error: StoreError) -> Self {
        QueryError::Failed(Box::new(error))
    }
}
