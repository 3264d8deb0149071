//! One publish, awaited until the broker confirmed it: the primitive both the
//! publisher and the worker (retries, dead letters) are built on.

use bus_core::DispatchError;
use lapin::{
    options::BasicPublishOptions, BasicProperties, Channel, Confirmation, PublisherConfirm,
};
use tokio::time::Instant;

use crate::naming::short;

/// Why a confirmed publish did not succeed.
#[derive(Debug)]
pub(crate) enum PublishFailure {
    /// The broker answered and said no (negative confirm, unroutable). The
    /// channel is healthy.
    Refused(String),
    /// No answer in time, or the channel or connection failed: the channel
    /// must not be reused.
    Unavailable {
        reason: String,
        source: Option<lapin::Error>,
    },
}

impl std::fmt::Display for PublishFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(reason) => write!(f, "refused by the broker: {reason}"),
            Self::Unavailable { reason, .. } => write!(f, "broker unavailable: {reason}"),
        }
    }
}

impl From<PublishFailure> for DispatchError {
    fn from(failure: PublishFailure) -> Self {
        match failure {
            PublishFailure::Refused(reason) => DispatchError::Refused { reason },
            PublishFailure::Unavailable { reason, source } => DispatchError::Unavailable {
                reason,
                source: source.map(|error| Box::new(error) as _),
            },
        }
    }
}

/// Publishes `body` as a mandatory message on a confirm-mode `channel` and
/// waits, until `deadline` at most, for the broker's confirm.
///
/// `Ok` means the broker acknowledged it and did not return it: it is routed
/// to at least one queue (or to an alternate exchange) and, being persistent
/// on durable queues, written.
pub(crate) async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    properties: BasicProperties,
    body: &[u8],
    deadline: Instant,
) -> Result<(), PublishFailure> {
    let confirm = publish(channel, exchange, routing_key, properties, body, deadline).await?;
    await_confirm(confirm, deadline).await
}

/// Writes `body` as a mandatory message on a confirm-mode `channel`, until
/// `deadline` at most, and returns the broker's confirm still to be awaited
/// ([`await_confirm`]).
///
/// Keep other publishes off `channel` until the confirm arrived: lapin
/// matches confirms to publishes by delivery tag, but hands a returned
/// (unroutable) message to whichever confirm of the channel completes next,
/// so only one unconfirmed publish per channel keeps refusals exact.
pub(crate) async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    properties: BasicProperties,
    body: &[u8],
    deadline: Instant,
) -> Result<PublisherConfirm, PublishFailure> {
    let exchange = short(exchange).map_err(|error| PublishFailure::Refused(error.to_string()))?;
    let routing_key =
        short(routing_key).map_err(|error| PublishFailure::Refused(error.to_string()))?;
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let written = channel.basic_publish(exchange, routing_key, options, body, properties);
    by_deadline(deadline, written, "message not written before the deadline").await
}

/// `step`'s outcome if it finishes by `deadline`; no outcome in time
/// (`missing` says which), or a channel or connection failure, is
/// [`PublishFailure::Unavailable`].
async fn by_deadline<T>(
    deadline: Instant,
    step: impl std::future::Future<Output = lapin::Result<T>>,
    missing: &str,
) -> Result<T, PublishFailure> {
    match tokio::time::timeout_at(deadline, step).await {
        Err(_elapsed) => Err(PublishFailure::Unavailable {
            reason: missing.to_owned(),
            source: None,
        }),
        Ok(Err(error)) => Err(PublishFailure::Unavailable {
            reason: error.to_string(),
            source: Some(error),
        }),
        Ok(Ok(value)) => Ok(value),
    }
}

/// Waits, until `deadline` at most, for the broker's confirm of a message
/// [`publish`]ed on a confirm-mode channel.
///
/// `Ok` means the broker acknowledged it and did not return it; a negative
/// confirm or a returned (unroutable) message is [`PublishFailure::Refused`];
/// no confirm in time, or a channel or connection failure, is
/// [`PublishFailure::Unavailable`].
pub(crate) async fn await_confirm(
    confirm: PublisherConfirm,
    deadline: Instant,
) -> Result<(), PublishFailure> {
    match by_deadline(
        deadline,
        confirm,
        "no publisher confirm before the deadline",
    )
    .await?
    {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(PublishFailure::Refused(format!(
            "unroutable, returned with {} {}",
            returned.reply_code, returned.reply_text
        ))),
        Confirmation::Nack(_) => Err(PublishFailure::Refused(
            "negative publisher confirm (broker could not store the message)".to_owned(),
        )),
        Confirmation::NotRequested => Err(PublishFailure::Unavailable {
            reason: "channel is not in confirm mode".to_owned(),
            source: None,
        }),
    }
}
