//! One publish, awaited until the broker confirmed it: the primitive both the
//! publisher and the worker (retries, dead letters) are built on.

use bus_core::DispatchError;
use lapin::{options::BasicPublishOptions, BasicProperties, Channel, Confirmation};
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
///
/// Keep other publishes off `channel` until this returns: lapin matches
/// confirms to publishes by delivery tag, but hands a returned (unroutable)
/// message to whichever confirm of the channel completes next, so only one
/// unconfirmed publish per channel keeps refusals exact.
pub(crate) async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    properties: BasicProperties,
    body: &[u8],
    deadline: Instant,
) -> Result<(), PublishFailure> {
    let exchange = short(exchange).map_err(|error| PublishFailure::Refused(error.to_string()))?;
    let routing_key =
        short(routing_key).map_err(|error| PublishFailure::Refused(error.to_string()))?;
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let publish = async {
        channel
            .basic_publish(exchange, routing_key, options, body, properties)
            .await?
            .await
    };
    match tokio::time::timeout_at(deadline, publish).await {
        Err(_elapsed) => Err(PublishFailure::Unavailable {
            reason: "no publisher confirm before the deadline".to_owned(),
            source: None,
        }),
        Ok(Err(error)) => Err(PublishFailure::Unavailable {
            reason: error.to_string(),
            source: Some(error),
        }),
        Ok(Ok(Confirmation::Ack(None))) => Ok(()),
        Ok(Ok(Confirmation::Ack(Some(returned)))) => Err(PublishFailure::Refused(format!(
            "unroutable, returned with {} {}",
            returned.reply_code, returned.reply_text
        ))),
        Ok(Ok(Confirmation::Nack(_))) => Err(PublishFailure::Refused(
            "negative publisher confirm (broker could not store the message)".to_owned(),
        )),
        Ok(Ok(Confirmation::NotRequested)) => Err(PublishFailure::Unavailable {
            reason: "channel is not in confirm mode".to_owned(),
            source: None,
        }),
    }
}
