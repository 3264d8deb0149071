//! Every exchange, queue and binding an application needs, declared
//! idempotently on start and after every reconnection.

use std::{collections::BTreeSet, time::Duration};

use bus_core::{Handlers, RetryPolicy};
use lapin::{
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString},
    Channel, ExchangeKind,
};

use crate::{
    naming::{short, Naming},
    QueueType, RabbitError,
};

/// Queue argument: classic or quorum.
pub const ARG_QUEUE_TYPE: &str = "x-queue-type";
/// Queue argument: how long a message stays in a delay queue (ms).
pub const ARG_MESSAGE_TTL: &str = "x-message-ttl";
/// Queue argument: exchange expired or rejected messages are sent to.
pub const ARG_DEAD_LETTER_EXCHANGE: &str = "x-dead-letter-exchange";
/// Queue argument: routing key expired or rejected messages are sent with.
pub const ARG_DEAD_LETTER_ROUTING_KEY: &str = "x-dead-letter-routing-key";
/// Queue argument: most messages the queue holds.
pub const ARG_MAX_LENGTH: &str = "x-max-length";
/// Queue argument: what happens past `x-max-length`.
pub const ARG_OVERFLOW: &str = "x-overflow";
/// `x-overflow` value: refuse new messages (the publisher's confirm is a
/// nack) instead of dropping the oldest.
pub const OVERFLOW_REJECT_PUBLISH: &str = "reject-publish";
/// Queue argument (quorum queues): deliveries returned to the queue
/// (consumer gone, `nack` with requeue) after which the broker
/// dead-letters a message.
pub const ARG_DELIVERY_LIMIT: &str = "x-delivery-limit";
/// Queue argument (quorum queues): how the broker dead-letters.
pub const ARG_DEAD_LETTER_STRATEGY: &str = "x-dead-letter-strategy";
/// `x-dead-letter-strategy` value: the broker keeps a dead-lettered
/// message until the target queue confirmed it (needs `x-overflow` =
/// `reject-publish`; RabbitMQ 3.10 also needs the `stream_queue` feature
/// flag).
pub const DEAD_LETTER_AT_LEAST_ONCE: &str = "at-least-once";
/// Exchange argument: where messages no binding matches go.
pub const ARG_ALTERNATE_EXCHANGE: &str = "alternate-exchange";

/// One queue a handler consumes, with where it is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkQueue {
    /// Queue name.
    pub queue: String,
    /// Exchange it is bound to.
    pub exchange: String,
    /// Binding key: the message type.
    pub message_type: String,
}

/// The names of an application's exchanges, queues and bindings, and how to
/// declare them.
///
/// Built from a [`Handlers`] set ([`Topology::from_handlers`]) for a worker,
/// or by hand for a process that only publishes but knows the names:
///
/// ```
/// use bus_rabbitmq::Topology;
/// let topology = Topology::new("shop")
///     .with_command("shop.CreateOffer")
///     .with_subscription("shop.OfferCreated", "search");
/// assert!(topology.queues().contains(&"shop.command.shop.CreateOffer".to_owned()));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    naming: Naming,
    queue_type: QueueType,
    retry_delays: Vec<Duration>,
    commands: BTreeSet<String>,
    subscriptions: BTreeSet<(String, String)>,
    command_max_length: Option<u32>,
    dead_letter_max_length: Option<u32>,
    delivery_limit: u32,
}

impl Topology {
    /// The exchanges and the unrouted-events queue of `namespace`, classic
    /// queues, the default [`RetryPolicy`]'s delays; no command, no
    /// subscriber yet.
    pub fn new(namespace: impl Into<String>) -> Self {
        Self {
            naming: Naming::new(namespace),
            queue_type: QueueType::default(),
            retry_delays: Vec::new(),
            commands: BTreeSet::new(),
            subscriptions: BTreeSet::new(),
            command_max_length: None,
            dead_letter_max_length: None,
            delivery_limit: 0,
        }
        .with_retry_policy(&RetryPolicy::default())
    }

    /// Every command and subscription of `handlers`, in `namespace`.
    pub fn from_handlers(namespace: impl Into<String>, handlers: &Handlers) -> Self {
        Self::new(namespace).with_handlers(handlers)
    }

    /// Adds every command and subscription of `handlers`.
    pub fn with_handlers(mut self, handlers: &Handlers) -> Self {
        for handler in handlers.commands() {
            self.commands.insert(handler.message_type().to_owned());
        }
        for subscription in handlers.subscriptions() {
            self.subscriptions.insert((
                subscription.event_type.to_owned(),
                subscription.subscriber.clone(),
            ));
        }
        self
    }

    /// Adds the queue of command `message_type`.
    pub fn with_command(mut self, message_type: impl Into<String>) -> Self {
        self.commands.insert(message_type.into());
        self
    }

    /// Adds the queue of `subscriber` to event `message_type`.
    pub fn with_subscription(
        mut self,
        message_type: impl Into<String>,
        subscriber: impl Into<String>,
    ) -> Self {
        self.subscriptions
            .insert((message_type.into(), subscriber.into()));
        self
    }

    /// Declares every queue as `queue_type`.
    pub fn with_queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self
    }

    /// Bounds command queues at `command` messages and dead-letter queues
    /// at `dead_letter` (`None`: unbounded), both with `reject-publish`
    /// overflow: past the bound the broker refuses new messages (a negative
    /// confirm) and keeps every message it holds.
    pub fn with_bounds(mut self, command: Option<u32>, dead_letter: Option<u32>) -> Self {
        self.command_max_length = command;
        self.dead_letter_max_length = dead_letter;
        self
    }

    /// One delay queue per distinct delay of `policy`'s schedule; on quorum
    /// queues, `policy.max_attempts` is also the work queues' delivery limit.
    pub fn with_retry_policy(mut self, policy: &RetryPolicy) -> Self {
        self.delivery_limit = policy.max_attempts;
        let mut delays = policy.schedule();
        delays.sort();
        delays.dedup();
        self.retry_delays = delays;
        self
    }

    /// The names of this topology's namespace.
    pub fn naming(&self) -> &Naming {
        &self.naming
    }

    /// The queue type of every queue.
    pub fn queue_type(&self) -> QueueType {
        self.queue_type
    }

    /// The `x-delivery-limit` of the work queues when they are quorum
    /// queues: the retry policy's `max_attempts`.
    pub fn delivery_limit(&self) -> u32 {
        self.delivery_limit
    }

    /// The distinct retry delays, shortest first; each has a delay queue per
    /// work queue.
    pub fn retry_delays(&self) -> &[Duration] {
        &self.retry_delays
    }

    /// Every queue a handler consumes: command queues, then subscriber queues.
    pub fn work_queues(&self) -> Vec<WorkQueue> {
        let commands = self.commands.iter().map(|message_type| WorkQueue {
            queue: self.naming.command_queue(message_type),
            exchange: self.naming.commands_exchange(),
            message_type: message_type.clone(),
        });
        let subscribers = self
            .subscriptions
            .iter()
            .map(|(message_type, subscriber)| WorkQueue {
                queue: self.naming.subscriber_queue(message_type, subscriber),
                exchange: self.naming.events_exchange(),
                message_type: message_type.clone(),
            });
        commands.chain(subscribers).collect()
    }

    /// Every exchange name.
    pub fn exchanges(&self) -> Vec<String> {
        vec![
            self.naming.commands_exchange(),
            self.naming.events_exchange(),
            self.naming.unrouted_exchange(),
        ]
    }

    /// Every queue name: the unrouted-events queue, then for each work queue
    /// the queue itself, its delay queues and its dead-letter queue.
    pub fn queues(&self) -> Vec<String> {
        let mut queues = vec![self.naming.unrouted_queue()];
        for work in self.work_queues() {
            queues.extend(
                self.retry_delays
                    .iter()
                    .map(|delay| Naming::retry_queue(&work.queue, *delay)),
            );
            queues.push(Naming::dead_letter_queue(&work.queue));
            queues.push(work.queue);
        }
        queues
    }

    /// Declares everything, idempotently: durable exchanges, durable queues
    /// with their arguments, bindings. Declaring twice is harmless; declaring
    /// a queue that exists with other arguments fails with the broker's
    /// `PRECONDITION_FAILED` (and closes `channel`).
    pub async fn declare(&self, channel: &Channel) -> Result<(), RabbitError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let unrouted = self.naming.unrouted_exchange();
        declare_exchange(
            channel,
            &unrouted,
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
        declare_exchange(
            channel,
            &self.naming.commands_exchange(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        let mut events_args = FieldTable::default();
        events_args.insert(ARG_ALTERNATE_EXCHANGE.into(), long_string(&unrouted));
        declare_exchange(
            channel,
            &self.naming.events_exchange(),
            ExchangeKind::Direct,
            durable,
            events_args,
        )
        .await?;

        let unrouted_queue = self.naming.unrouted_queue();
        self.declare_queue(channel, &unrouted_queue, self.queue_args())
            .await?;
        bind(channel, &unrouted_queue, &unrouted, "").await?;

        for work in self.work_queues() {
            let dead_letters = Naming::dead_letter_queue(&work.queue);
            self.declare_queue(channel, &dead_letters, self.dead_letter_queue_args())
                .await?;
            for delay in &self.retry_delays {
                let retry = Naming::retry_queue(&work.queue, *delay);
                self.declare_queue(channel, &retry, self.retry_queue_args(&work.queue, *delay))
                    .await?;
            }
            let args = if work.exchange == self.naming.commands_exchange() {
                self.command_queue_args(&work.queue)
            } else {
                self.work_queue_args(&work.queue)
            };
            self.declare_queue(channel, &work.queue, args).await?;
            bind(channel, &work.queue, &work.exchange, &work.message_type).await?;
        }
        if self.queue_type == QueueType::Quorum {
            tracing::info!(
                namespace = self.naming.namespace(),
                delivery_limit = self.delivery_limit,
                "quorum topology declared: work and delay queues dead-letter at least once \
                 (on RabbitMQ 3.10 only with the stream_queue feature flag enabled; without \
                 it the broker falls back to at-most-once dead lettering)"
            );
        } else {
            tracing::debug!(namespace = self.naming.namespace(), "topology declared");
        }
        Ok(())
    }

    /// Arguments every queue has.
    pub fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        args.insert(ARG_QUEUE_TYPE.into(), long_string(self.queue_type.as_str()));
        args
    }

    /// Arguments of a work queue: anything the broker itself dead-letters
    /// goes to its `.dlq`, not away. On quorum queues, that is a message
    /// returned to the queue more than the delivery limit (the retry
    /// policy's `max_attempts`: a message that crashes its consumer again and
    /// again), dead-lettered at least once
    /// ([`Topology::at_least_once_dead_lettering`]).
    pub fn work_queue_args(&self, queue: &str) -> FieldTable {
        let mut args = self.queue_args();
        args.insert(ARG_DEAD_LETTER_EXCHANGE.into(), long_string(""));
        args.insert(
            ARG_DEAD_LETTER_ROUTING_KEY.into(),
            long_string(&Naming::dead_letter_queue(queue)),
        );
        if self.queue_type == QueueType::Quorum {
            args.insert(
                ARG_DELIVERY_LIMIT.into(),
                AMQPValue::LongLongInt(self.delivery_limit.into()),
            );
            self.at_least_once_dead_lettering(&mut args);
        }
        args
    }

    /// On quorum queues, makes a queue that dead-letters do it at least
    /// once: `x-dead-letter-strategy` = `at-least-once` with `x-overflow` =
    /// `reject-publish` (which the strategy requires). The broker then keeps
    /// a dead-lettered message until its target queue confirmed it, where
    /// the default (at-most-once) drops it if the target is unavailable or
    /// full. Classic queues are left as they are: their dead-lettering is
    /// at most once, and changing their arguments would make every existing
    /// deployment's redeclaration fail (`PRECONDITION_FAILED`).
    pub fn at_least_once_dead_lettering(&self, args: &mut FieldTable) {
        if self.queue_type == QueueType::Quorum {
            args.insert(
                ARG_DEAD_LETTER_STRATEGY.into(),
                long_string(DEAD_LETTER_AT_LEAST_ONCE),
            );
            args.insert(ARG_OVERFLOW.into(), long_string(OVERFLOW_REJECT_PUBLISH));
        }
    }

    /// Arguments of a command queue: a work queue's, with the command bound.
    pub fn command_queue_args(&self, queue: &str) -> FieldTable {
        let mut args = self.work_queue_args(queue);
        bound(&mut args, self.command_max_length);
        args
    }

    /// Arguments of a dead-letter queue, with its bound.
    pub fn dead_letter_queue_args(&self) -> FieldTable {
        let mut args = self.queue_args();
        bound(&mut args, self.dead_letter_max_length);
        args
    }

    /// Arguments of the delay queue of `queue` for `delay`: messages expire
    /// after `delay` and are dead-lettered, through the default exchange,
    /// back to `queue` (at least once on quorum queues).
    pub fn retry_queue_args(&self, queue: &str, delay: Duration) -> FieldTable {
        let mut args = self.queue_args();
        let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        args.insert(ARG_MESSAGE_TTL.into(), AMQPValue::LongLongInt(ttl));
        args.insert(ARG_DEAD_LETTER_EXCHANGE.into(), long_string(""));
        args.insert(ARG_DEAD_LETTER_ROUTING_KEY.into(), long_string(queue));
        self.at_least_once_dead_lettering(&mut args);
        args
    }

    async fn declare_queue(
        &self,
        channel: &Channel,
        queue: &str,
        args: FieldTable,
    ) -> Result<(), RabbitError> {
        channel
            .queue_declare(
                short(queue)?,
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                args,
            )
            .await
            .map_err(|source| RabbitError::Declare {
                what: format!("queue {queue}"),
                source,
            })?;
        Ok(())
    }
}

fn bound(args: &mut FieldTable, max_length: Option<u32>) {
    if let Some(max_length) = max_length {
        args.insert(
            ARG_MAX_LENGTH.into(),
            AMQPValue::LongLongInt(max_length.into()),
        );
        args.insert(ARG_OVERFLOW.into(), long_string(OVERFLOW_REJECT_PUBLISH));
    }
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

async fn declare_exchange(
    channel: &Channel,
    exchange: &str,
    kind: ExchangeKind,
    options: ExchangeDeclareOptions,
    args: FieldTable,
) -> Result<(), RabbitError> {
    channel
        .exchange_declare(short(exchange)?, kind, options, args)
        .await
        .map_err(|source| RabbitError::Declare {
            what: format!("exchange {exchange}"),
            source,
        })
}

async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    routing_key: &str,
) -> Result<(), RabbitError> {
    channel
        .queue_bind(
            short(queue)?,
            short(exchange)?,
            short(routing_key)?,
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|source| RabbitError::Declare {
            what: format!("binding {exchange} -> {queue} ({routing_key})"),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_work_queue_gets_one_delay_queue_per_distinct_delay_and_a_dlq() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            multiplier: 2.0,
            max_backoff: Duration::from_millis(200),
        };
        let topology = Topology::new("t")
            .with_command("t.Do")
            .with_retry_policy(&policy);
        assert_eq!(
            topology.retry_delays(),
            [Duration::from_millis(100), Duration::from_millis(200)]
        );
        assert_eq!(
            topology.queues(),
            [
                "t.events.unrouted",
                "t.command.t.Do.retry.100ms",
                "t.command.t.Do.retry.200ms",
                "t.command.t.Do.dlq",
                "t.command.t.Do",
            ]
        );
    }

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut table = FieldTable::default();
        for (key, value) in entries {
            table.insert((*key).into(), value.clone());
        }
        table
    }

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(100),
            multiplier: 2.0,
            max_backoff: Duration::from_millis(100),
        }
    }

    #[test]
    fn classic_queues_keep_their_arguments_exactly() {
        let topology = Topology::new("t")
            .with_command("t.Do")
            .with_retry_policy(&policy(5))
            .with_bounds(Some(10), Some(20));
        let classic = || long_string("classic");
        let dlx = || long_string("");
        assert_eq!(
            topology.command_queue_args("t.command.t.Do"),
            table(&[
                (ARG_QUEUE_TYPE, classic()),
                (ARG_DEAD_LETTER_EXCHANGE, dlx()),
                (
                    ARG_DEAD_LETTER_ROUTING_KEY,
                    long_string("t.command.t.Do.dlq")
                ),
                (ARG_MAX_LENGTH, AMQPValue::LongLongInt(10)),
                (ARG_OVERFLOW, long_string(OVERFLOW_REJECT_PUBLISH)),
            ])
        );
        assert_eq!(
            topology.work_queue_args("t.event.t.Done.s"),
            table(&[
                (ARG_QUEUE_TYPE, classic()),
                (ARG_DEAD_LETTER_EXCHANGE, dlx()),
                (
                    ARG_DEAD_LETTER_ROUTING_KEY,
                    long_string("t.event.t.Done.s.dlq")
                ),
            ])
        );
        assert_eq!(
            topology.retry_queue_args("t.command.t.Do", Duration::from_millis(100)),
            table(&[
                (ARG_QUEUE_TYPE, classic()),
                (ARG_MESSAGE_TTL, AMQPValue::LongLongInt(100)),
                (ARG_DEAD_LETTER_EXCHANGE, dlx()),
                (ARG_DEAD_LETTER_ROUTING_KEY, long_string("t.command.t.Do")),
            ])
        );
        assert_eq!(
            topology.dead_letter_queue_args(),
            table(&[
                (ARG_QUEUE_TYPE, classic()),
                (ARG_MAX_LENGTH, AMQPValue::LongLongInt(20)),
                (ARG_OVERFLOW, long_string(OVERFLOW_REJECT_PUBLISH)),
            ])
        );
        assert_eq!(topology.queue_args(), table(&[(ARG_QUEUE_TYPE, classic())]));
    }

    #[test]
    fn quorum_work_queues_get_the_delivery_limit_and_at_least_once_dead_lettering() {
        let topology = Topology::new("t")
            .with_command("t.Do")
            .with_queue_type(QueueType::Quorum)
            .with_retry_policy(&policy(5))
            .with_bounds(Some(10), None);
        let quorum = || long_string("quorum");
        let dlx = || long_string("");
        let at_least_once = || long_string(DEAD_LETTER_AT_LEAST_ONCE);
        let reject = || long_string(OVERFLOW_REJECT_PUBLISH);
        assert_eq!(topology.delivery_limit(), 5);
        assert_eq!(
            topology.command_queue_args("t.command.t.Do"),
            table(&[
                (ARG_QUEUE_TYPE, quorum()),
                (ARG_DEAD_LETTER_EXCHANGE, dlx()),
                (
                    ARG_DEAD_LETTER_ROUTING_KEY,
                    long_string("t.command.t.Do.dlq")
                ),
                (ARG_DELIVERY_LIMIT, AMQPValue::LongLongInt(5)),
                (ARG_DEAD_LETTER_STRATEGY, at_least_once()),
                (ARG_OVERFLOW, reject()),
                (ARG_MAX_LENGTH, AMQPValue::LongLongInt(10)),
            ])
        );
        assert_eq!(
            topology.work_queue_args("t.event.t.Done.s"),
            table(&[
                (ARG_QUEUE_TYPE, quorum()),
                (ARG_DEAD_LETTER_EXCHANGE, dlx()),
                (
                    ARG_DEAD_LETTER_ROUTING_KEY,
                    long_string("t.event.t.Done.s.dlq")
                ),
                (ARG_DELIVERY_LIMIT, AMQPValue::LongLongInt(5)),
                (ARG_DEAD_LETTER_STRATEGY, at_least_once()),
                (ARG_OVERFLOW, reject()),
            ])
        );
        assert_eq!(
            topology.retry_queue_args("t.command.t.Do", Duration::from_millis(100)),
            table(&[
                (ARG_QUEUE_TYPE, quorum()),
                (ARG_MESSAGE_TTL, AMQPValue::LongLongInt(100)),
                (ARG_DEAD_LETTER_EXCHANGE, dlx()),
                (ARG_DEAD_LETTER_ROUTING_KEY, long_string("t.command.t.Do")),
                (ARG_DEAD_LETTER_STRATEGY, at_least_once()),
                (ARG_OVERFLOW, reject()),
            ])
        );
        // Dead-letter queues dead-letter nothing: no strategy, no limit
        // (the dead-letter tools give messages back with requeue).
        assert_eq!(
            topology.dead_letter_queue_args(),
            table(&[(ARG_QUEUE_TYPE, quorum())])
        );
        assert_eq!(topology.queue_args(), table(&[(ARG_QUEUE_TYPE, quorum())]));
    }
}
