//! Configuration shared by the publisher and the worker.

use std::time::Duration;

use bus_core::{Handlers, RetryPolicy};

use crate::{BrokerAddresses, Naming, RabbitError, Topology};

/// The RabbitMQ queue implementation used for every queue this crate declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// Classic durable queues: a single node, the default.
    #[default]
    Classic,
    /// Quorum queues: replicated (Raft) across a cluster.
    Quorum,
}

impl QueueType {
    /// The value of the `x-queue-type` queue argument.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
        }
    }
}

/// How to reach the broker and how to use it.
///
/// Every field has a sensible default ([`RabbitConfig::default`]); an
/// application usually sets `amqp_url`, `namespace` and `connection_name`.
/// Its `Debug` output leaves the passwords of `amqp_url` out.
#[derive(Clone)]
pub struct RabbitConfig {
    /// Broker address, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f`, or
    /// the comma-separated addresses of a cluster's nodes, each with its own
    /// credentials and vhost: connections go to the first that answers and
    /// move on to the next after a lost connection (see
    /// [`BrokerAddresses`]).
    pub amqp_url: String,
    /// Shuffle the addresses of `amqp_url` once per process, so that the
    /// replicas of an application spread over a cluster's nodes (`true`, the
    /// default); `false` tries them in the order given.
    pub shuffle_addresses: bool,
    /// Prefix of every exchange and queue name (see [`Naming`]).
    pub namespace: String,
    /// Unacknowledged deliveries the broker may push to one queue's consumer
    /// (`basic.qos` prefetch count).
    pub prefetch: u16,
    /// Handlers running at once per consumed queue.
    pub concurrency: usize,
    /// Attempts and delays for retryable handler failures. Each distinct
    /// delay of [`RetryPolicy::schedule`] gets its own delay queue.
    pub retry: RetryPolicy,
    /// Classic or quorum queues.
    pub queue_type: QueueType,
    /// Longest a publish may take, waiting for a channel, the broker's
    /// confirm and everything in between included. Past it the publish fails
    /// with `DispatchError::Unavailable`.
    pub confirm_timeout: Duration,
    /// Longest the worker waits for a connection to open.
    pub connect_timeout: Duration,
    /// Connection name shown in the RabbitMQ management UI.
    pub connection_name: String,
    /// First delay before the worker reconnects after losing the broker.
    pub reconnect_min_backoff: Duration,
    /// Upper bound of the (doubling) reconnection delay.
    pub reconnect_max_backoff: Duration,
    /// Confirm-mode channels the publisher keeps in its pool: the most
    /// publishes awaiting their confirm at once (a channel carries one
    /// unconfirmed publish at a time, so that a message the broker returns
    /// as unroutable is refused to the publish it belongs to). Further
    /// publishes wait for a channel, within `confirm_timeout`.
    pub publisher_channels: usize,
    /// Most messages a command queue holds (`x-max-length`, `reject-publish`
    /// overflow): past it a send fails with `DispatchError::Refused` (an
    /// API answers `503`) instead of growing the queue until the broker's
    /// memory alarm blocks every publisher. `None`: unbounded.
    pub queue_max_length: Option<u32>,
    /// Most messages a dead-letter queue holds, also `reject-publish`: a
    /// worker whose dead-letter copy is refused requeues the delivery (kept,
    /// retried after a pause) until the queue is drained. `None`: unbounded.
    pub dead_letter_max_length: Option<u32>,
}

impl std::fmt::Debug for RabbitConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addresses: Vec<String> = self
            .amqp_url
            .split(',')
            .map(|url| crate::addresses::redact(url.trim()))
            .collect();
        f.debug_struct("RabbitConfig")
            .field("amqp_url", &addresses.join(","))
            .field("shuffle_addresses", &self.shuffle_addresses)
            .field("namespace", &self.namespace)
            .field("prefetch", &self.prefetch)
            .field("concurrency", &self.concurrency)
            .field("retry", &self.retry)
            .field("queue_type", &self.queue_type)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("connection_name", &self.connection_name)
            .field("reconnect_min_backoff", &self.reconnect_min_backoff)
            .field("reconnect_max_backoff", &self.reconnect_max_backoff)
            .field("publisher_channels", &self.publisher_channels)
            .field("queue_max_length", &self.queue_max_length)
            .field("dead_letter_max_length", &self.dead_letter_max_length)
            .finish()
    }
}

impl Default for RabbitConfig {
    fn default() -> Self {
        Self {
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
            shuffle_addresses: true,
            namespace: "marketplace".to_owned(),
            prefetch: 64,
            concurrency: 16,
            retry: RetryPolicy::default(),
            queue_type: QueueType::Classic,
            confirm_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            connection_name: "bus-rabbitmq".to_owned(),
            reconnect_min_backoff: Duration::from_millis(200),
            reconnect_max_backoff: Duration::from_secs(30),
            publisher_channels: 64,
            queue_max_length: Some(100_000),
            dead_letter_max_length: Some(100_000),
        }
    }
}

impl RabbitConfig {
    /// The worker's reconnection delays: doubling from
    /// `reconnect_min_backoff` up to `reconnect_max_backoff`, never giving
    /// up (read with [`RetryPolicy::delay_after`]).
    pub fn reconnect_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: u32::MAX,
            initial_backoff: self.reconnect_min_backoff,
            multiplier: 2.0,
            max_backoff: self.reconnect_max_backoff.max(self.reconnect_min_backoff),
        }
    }

    /// The parsed broker addresses of `amqp_url`, shuffled if
    /// `shuffle_addresses`: an [`RabbitError::InvalidConfig`] naming the
    /// position of a malformed entry (never its password).
    pub fn addresses(&self) -> Result<BrokerAddresses, RabbitError> {
        BrokerAddresses::parse(&self.amqp_url, self.shuffle_addresses)
    }

    /// The names of this configuration's namespace.
    pub fn naming(&self) -> Naming {
        Naming::new(&self.namespace)
    }

    /// The topology of `handlers` in this configuration's namespace, with its
    /// queue type and retry schedule: what a worker for `handlers` declares,
    /// and what a publisher of the same application should declare too.
    pub fn topology(&self, handlers: &Handlers) -> Topology {
        self.empty_topology().with_handlers(handlers)
    }

    /// A topology of this configuration (namespace, queue type, retry
    /// schedule, queue bounds) with no command and no subscriber yet: the exchanges and the
    /// unrouted-events queue. Add names with [`Topology::with_command`] and
    /// [`Topology::with_subscription`].
    pub fn empty_topology(&self) -> Topology {
        Topology::new(&self.namespace)
            .with_queue_type(self.queue_type)
            .with_retry_policy(&self.retry)
            .with_bounds(self.queue_max_length, self.dead_letter_max_length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debug_output_shows_no_password() {
        let config = RabbitConfig {
            amqp_url: "amqp://app:hunter2@node-1:5672/shop, amqp://app:hunter3@node-2:5672/shop"
                .to_owned(),
            ..RabbitConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(
            shown.contains("amqp://app@node-1:5672/shop,amqp://app@node-2:5672/shop"),
            "{shown}"
        );
    }
}
