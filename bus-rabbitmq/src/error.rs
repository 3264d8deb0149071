//! The crate's errors (publishing errors are `bus_core::DispatchError`s).

/// Something went wrong talking to the broker outside a publish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RabbitError {
    /// The configuration cannot work (bad URL, zero concurrency...).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// An exchange or queue name would not fit AMQP (longer than 255 bytes).
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The offending name.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// The broker could not be reached, refused the connection, or did not
    /// answer in time.
    #[error("cannot connect to the broker: {0}")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A channel could not be opened or set up (confirm mode, qos).
    #[error("channel error: {0}")]
    Channel(#[source] lapin::Error),
    /// Declaring an exchange, a queue or a binding failed (e.g. a queue
    /// exists with other arguments: `PRECONDITION_FAILED`).
    #[error("cannot declare {what}: {source}")]
    Declare {
        /// What was being declared, e.g. `queue marketplace.command.X`.
        what: String,
        /// What the broker or client said.
        #[source]
        source: lapin::Error,
    },
    /// Starting to consume a queue failed.
    #[error("cannot consume {queue}: {source}")]
    Consume {
        /// The queue.
        queue: String,
        /// What the broker or client said.
        #[source]
        source: lapin::Error,
    },
    /// Building a connection or channel pool failed.
    #[error("cannot build the pool: {0}")]
    Pool(String),
}
