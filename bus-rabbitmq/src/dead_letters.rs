//! Listing, showing, replaying and purging the messages parked in the
//! `{queue}.dlq` queues of a [`Topology`].
//!
//! Every operation is one bounded pass per dead-letter queue: it reads the
//! queue's message count (a passive declare), then takes at most that many
//! messages with `basic.get` and manual acknowledgement, so a pass never
//! loops over the messages it gives back, nor over dead letters arriving
//! meanwhile. A message the operation does not take (not selected, a dry
//! run, a listing) stays unacknowledged until the end of the pass and is
//! then given back with one `basic.nack(requeue)`: RabbitMQ puts it back in
//! its place. Should the tool die mid-way, the broker requeues everything
//! unacknowledged when the channel closes: reading loses nothing.
//!
//! A replay publishes a copy of the parked message to its work queue
//! through the default exchange, exactly as the worker's delay queues send
//! a retry back: same properties (message id, type, timestamp), the
//! dead-lettering headers removed and `x-attempt` back to 1, persistent,
//! `mandatory`, on a confirm-mode channel. Only once the broker confirmed
//! the copy is the parked message acknowledged. If the acknowledgement is
//! lost, the message is still parked and a later replay sends it again;
//! handlers are idempotent by the message id, as for any redelivery.

use std::collections::BTreeMap;

use bus_core::dead_letter_ops::{
    payload_value, DeadLetterGroup, DeadLetterRecord, DeadLetterSelector, GroupBy, Summary,
};
use chrono::{DateTime, Utc};
use lapin::{
    options::{
        BasicAckOptions, BasicGetOptions, BasicNackOptions, ConfirmSelectOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, Connection, ConnectionProperties,
};
use tokio::time::Instant;
use uuid::Uuid;

use crate::{
    confirm::publish_confirmed,
    naming::short,
    wire::{self, headers, PERSISTENT},
    Naming, RabbitConfig, Topology,
};

/// Why a dead-letter operation failed. Messages not yet taken are left in
/// their queue in every case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterError {
    /// The broker could not be reached, refused the connection, or did not
    /// answer in time.
    #[error("cannot connect to the broker: {0}")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A channel could not be opened or put in confirm mode.
    #[error("channel error: {0}")]
    Channel(#[source] lapin::Error),
    /// Reading a dead-letter queue failed.
    #[error("cannot read {queue}: {reason}")]
    Read {
        /// The dead-letter queue.
        queue: String,
        /// What the broker or client said.
        reason: String,
    },
    /// Acknowledging or giving back a message of a dead-letter queue
    /// failed; an unacknowledged message goes back to the queue when the
    /// channel closes.
    #[error("cannot settle a message of {queue}: {source}")]
    Settle {
        /// The dead-letter queue.
        queue: String,
        /// What the broker or client said.
        #[source]
        source: lapin::Error,
    },
    /// The copy of a replayed message was not confirmed (work queue gone,
    /// full, broker unavailable): the message stays parked and the replay
    /// stops there.
    #[error(
        "replay of message {message_id} to {queue} not confirmed ({reason}); \
         {replayed} replayed before it, the rest left parked"
    )]
    Replay {
        /// The work queue the copy was for.
        queue: String,
        /// The message id (or `-` when it has none).
        message_id: String,
        /// What went wrong.
        reason: String,
        /// Messages replayed (confirmed and acknowledged) before this one.
        replayed: usize,
    },
}

/// A work queue and the dead-letter queue its worker parks messages in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedQueue {
    /// The work queue (e.g. `marketplace.command.marketplace.CreateOffer`).
    pub work_queue: String,
    /// Its `.dlq`.
    pub dead_letter_queue: String,
}

/// What a pass does with a selected message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Take {
    /// Nothing: every message goes back.
    Nothing,
    /// Republishes it to its work queue, then acknowledges it.
    Replay,
    /// Acknowledges it: gone.
    Purge,
}

/// The dead-letter queues of one application's [`Topology`], to list,
/// show, replay and purge their messages.
///
/// ```no_run
/// # async fn example() -> Result<(), bus_rabbitmq::dead_letters::DeadLetterError> {
/// use bus_core::dead_letter_ops::{DeadLetterSelector, GroupBy};
/// use bus_rabbitmq::{dead_letters::DeadLetterQueues, RabbitConfig, Topology};
///
/// let config = RabbitConfig::default();
/// let topology = Topology::new("shop").with_command("shop.CreateOffer");
/// let queues = DeadLetterQueues::new(&config, &topology);
/// for group in queues.summarize(&DeadLetterSelector::default(), GroupBy::Reason).await? {
///     println!("{} {:?}: {}", group.queue, group.reason, group.count);
/// }
/// let selector = DeadLetterSelector { reason: Some("does not exist".into()), ..Default::default() };
/// let replayed = queues.replay(&selector, false).await?;
/// println!("{} replayed", replayed.len());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct DeadLetterQueues {
    config: RabbitConfig,
    queues: Vec<ParkedQueue>,
}

impl DeadLetterQueues {
    /// The dead-letter queues of every work queue of `topology`, on the
    /// broker of `config` (its `amqp_url`, `connect_timeout`,
    /// `confirm_timeout` and `connection_name`). Connects per operation.
    pub fn new(config: &RabbitConfig, topology: &Topology) -> Self {
        let queues = topology
            .work_queues()
            .into_iter()
            .map(|work| ParkedQueue {
                dead_letter_queue: Naming::dead_letter_queue(&work.queue),
                work_queue: work.queue,
            })
            .collect();
        Self {
            config: config.clone(),
            queues,
        }
    }

    /// The work queues and their dead-letter queues.
    pub fn queues(&self) -> &[ParkedQueue] {
        &self.queues
    }

    /// Counts the selected dead letters per work queue (and reason), with
    /// the oldest and newest dead-lettering time of each group. Every
    /// message stays where it is.
    pub async fn summarize(
        &self,
        selector: &DeadLetterSelector,
        group_by: GroupBy,
    ) -> Result<Vec<DeadLetterGroup>, DeadLetterError> {
        let mut summary = Summary::new(group_by);
        self.pass(selector, Take::Nothing, false, &mut |record| {
            summary.add(&record)
        })
        .await?;
        Ok(summary.groups())
    }

    /// Every selected dead letter, queue by queue, oldest first, with its
    /// headers and payload. Every message stays where it is.
    pub async fn find(
        &self,
        selector: &DeadLetterSelector,
    ) -> Result<Vec<DeadLetterRecord>, DeadLetterError> {
        let mut found = Vec::new();
        self.pass(selector, Take::Nothing, true, &mut |record| {
            found.push(record)
        })
        .await?;
        Ok(found)
    }

    /// Sends each selected dead letter back to its work queue (same message
    /// id, `x-attempt` 1, confirmed persistent publish) and only then
    /// removes it from its `.dlq`. Returns what was replayed (with
    /// `dry_run`, what would be, every message staying where it is).
    pub async fn replay(
        &self,
        selector: &DeadLetterSelector,
        dry_run: bool,
    ) -> Result<Vec<DeadLetterRecord>, DeadLetterError> {
        let take = if dry_run { Take::Nothing } else { Take::Replay };
        let mut replayed = Vec::new();
        self.pass(selector, take, false, &mut |record| replayed.push(record))
            .await?;
        Ok(replayed)
    }

    /// Removes the selected dead letters for good. Returns what was removed
    /// (with `dry_run`, what would be, every message staying where it is).
    pub async fn purge(
        &self,
        selector: &DeadLetterSelector,
        dry_run: bool,
    ) -> Result<Vec<DeadLetterRecord>, DeadLetterError> {
        let take = if dry_run { Take::Nothing } else { Take::Purge };
        let mut purged = Vec::new();
        self.pass(selector, take, false, &mut |record| purged.push(record))
            .await?;
        Ok(purged)
    }

    /// One bounded pass over every dead-letter queue `selector` may
    /// concern: `visit` sees each selected message, taken with `take` first.
    async fn pass(
        &self,
        selector: &DeadLetterSelector,
        take: Take,
        with_payload: bool,
        visit: &mut (dyn FnMut(DeadLetterRecord) + Send),
    ) -> Result<(), DeadLetterError> {
        let connection = self.connect().await?;
        let result = async {
            let publish = if take == Take::Replay {
                let channel = connection
                    .create_channel()
                    .await
                    .map_err(DeadLetterError::Channel)?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(DeadLetterError::Channel)?;
                Some(channel)
            } else {
                None
            };
            let mut taken = 0;
            for parked in &self.queues {
                let concerned = selector.queue.as_deref().is_none_or(|queue| {
                    queue == parked.work_queue || queue == parked.dead_letter_queue
                });
                if concerned {
                    let mut pass = QueuePass {
                        parked,
                        selector,
                        take,
                        with_payload,
                        publish: publish.as_ref(),
                        confirm_timeout: self.config.confirm_timeout,
                        taken: &mut taken,
                    };
                    pass.run(&connection, visit).await?;
                }
            }
            if let Some(channel) = publish {
                let _ = channel.close(200, "OK".into()).await;
            }
            Ok(())
        }
        .await;
        let _ = connection.close(200, "OK".into()).await;
        result
    }

    async fn connect(&self) -> Result<Connection, DeadLetterError> {
        let properties = ConnectionProperties::default().with_connection_name(
            format!("{} (dead letters)", self.config.connection_name)
                .as_str()
                .into(),
        );
        let addresses = self
            .config
            .addresses()
            .map_err(|error| DeadLetterError::Connect(Box::new(error)))?;
        let (connection, _address) = addresses
            .connect(&properties, self.config.connect_timeout)
            .await
            .map_err(|error| DeadLetterError::Connect(Box::new(error)))?;
        Ok(connection)
    }
}

/// One bounded pass over one dead-letter queue.
struct QueuePass<'a> {
    parked: &'a ParkedQueue,
    selector: &'a DeadLetterSelector,
    take: Take,
    with_payload: bool,
    publish: Option<&'a Channel>,
    confirm_timeout: std::time::Duration,
    /// Messages taken so far over the whole operation.
    taken: &'a mut usize,
}

impl QueuePass<'_> {
    async fn run(
        &mut self,
        connection: &Connection,
        visit: &mut (dyn FnMut(DeadLetterRecord) + Send),
    ) -> Result<(), DeadLetterError> {
        let queue = self.parked.dead_letter_queue.as_str();
        let read_error = |reason: String| DeadLetterError::Read {
            queue: queue.to_owned(),
            reason,
        };
        let name = short(queue).map_err(|error| read_error(error.to_string()))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(DeadLetterError::Channel)?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let count = match channel
            .queue_declare(name.clone(), passive, FieldTable::default())
            .await
        {
            Ok(declared) => declared.message_count(),
            // Not declared (no worker of this namespace ever started, or a
            // wrong namespace): nothing parked there. The broker closed this
            // channel; the connection lives on.
            Err(error) if connection.status().connected() => {
                tracing::warn!(%queue, %error, "dead-letter queue not found; counted as empty");
                return Ok(());
            }
            Err(error) => return Err(read_error(error.to_string())),
        };
        // The newest delivery tag not acknowledged: everything up to it goes
        // back with one nack at the end.
        let mut unsettled: Option<u64> = None;
        let result = async {
            for _ in 0..count {
                let Some(message) = channel
                    .basic_get(name.clone(), BasicGetOptions { no_ack: false })
                    .await
                    .map_err(|error| read_error(error.to_string()))?
                else {
                    break;
                };
                let delivery = &message.delivery;
                let record = record_of(&self.parked.work_queue, delivery, self.with_payload);
                let selected = self.selector.matches(
                    &self.parked.work_queue,
                    Some(&self.parked.dead_letter_queue),
                    record.message_id,
                    &record.reason,
                );
                if !selected || self.take == Take::Nothing {
                    unsettled = Some(delivery.delivery_tag);
                    if selected {
                        visit(record);
                    }
                    continue;
                }
                if self.take == Take::Replay {
                    if let Err(reason) = self.send_back(delivery).await {
                        unsettled = Some(delivery.delivery_tag);
                        return Err(DeadLetterError::Replay {
                            queue: self.parked.work_queue.clone(),
                            message_id: record
                                .message_id
                                .map_or_else(|| "-".to_owned(), |id| id.to_string()),
                            reason,
                            replayed: *self.taken,
                        });
                    }
                }
                channel
                    .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
                    .await
                    .map_err(|source| DeadLetterError::Settle {
                        queue: queue.to_owned(),
                        source,
                    })?;
                *self.taken += 1;
                visit(record);
            }
            Ok(())
        }
        .await;
        let given_back = match unsettled {
            Some(tag) => channel
                .basic_nack(
                    tag,
                    BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    },
                )
                .await
                .map_err(|source| DeadLetterError::Settle {
                    queue: queue.to_owned(),
                    source,
                }),
            None => Ok(()),
        };
        // Closing also requeues anything still unacknowledged.
        let _ = channel.close(200, "OK".into()).await;
        result.and(given_back)
    }

    /// Publishes the replay copy of `delivery` to its work queue and waits
    /// for the broker's confirm.
    async fn send_back(&self, delivery: &lapin::message::Delivery) -> Result<(), String> {
        let Some(channel) = self.publish else {
            return Err("no publishing channel".to_owned());
        };
        let properties = replay_properties(&delivery.properties);
        let deadline = Instant::now() + self.confirm_timeout;
        publish_confirmed(
            channel,
            "",
            &self.parked.work_queue,
            properties,
            &delivery.data,
            deadline,
        )
        .await
        .map_err(|failure| failure.to_string())
    }
}

/// The properties of a replay copy: the parked message's, persistent, with
/// the headers of its failures removed and the attempt count back to 1.
pub fn replay_properties(parked: &BasicProperties) -> BasicProperties {
    let mut table = FieldTable::default();
    if let Some(original) = parked.headers() {
        for (name, value) in original {
            let keep = !wire::is_transport_header(name.as_str())
                || [headers::VERSION, headers::TIMESTAMP].contains(&name.as_str());
            if keep {
                table.insert(name.clone(), value.clone());
            }
        }
    }
    table.insert(headers::ATTEMPT.into(), AMQPValue::LongUInt(1));
    parked
        .clone()
        .with_delivery_mode(PERSISTENT)
        .with_headers(table)
}

/// Describes a parked delivery of `work_queue`.
fn record_of(
    work_queue: &str,
    delivery: &lapin::message::Delivery,
    with_payload: bool,
) -> DeadLetterRecord {
    let properties = &delivery.properties;
    let table = properties.headers().clone().unwrap_or_default();
    let time = |name: &str| {
        wire::header_string(&table, name)
            .and_then(|value| DateTime::parse_from_rfc3339(&value).ok())
            .map(|at| at.with_timezone(&Utc))
    };
    let reason = wire::header_string(&table, headers::ERROR)
        .or_else(|| {
            wire::header_string(&table, "x-first-death-reason")
                .map(|why| format!("dead-lettered by the broker ({why})"))
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let created_at = time(headers::TIMESTAMP).or_else(|| {
        properties
            .timestamp()
            .and_then(|seconds| i64::try_from(seconds).ok())
            .and_then(|seconds| DateTime::from_timestamp(seconds, 0))
    });
    let headers: BTreeMap<String, String> = table
        .inner()
        .iter()
        .map(|(name, value)| (name.to_string(), header_text(value)))
        .collect();
    DeadLetterRecord {
        queue: work_queue.to_owned(),
        message_id: properties
            .message_id()
            .as_ref()
            .and_then(|id| Uuid::parse_str(id.as_str()).ok()),
        message_type: properties.kind().as_ref().map(|kind| kind.to_string()),
        reason,
        attempts: wire::header_u32(&table, headers::ATTEMPTS),
        created_at,
        first_failed_at: time(headers::FIRST_FAILED_AT),
        dead_lettered_at: time(headers::DEAD_LETTERED_AT),
        headers,
        payload: with_payload.then(|| payload_value(&delivery.data)),
    }
}

/// A header value as text, for an operator.
fn header_text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(text) => String::from_utf8_lossy(text.as_bytes()).into_owned(),
        AMQPValue::ShortString(text) => text.to_string(),
        AMQPValue::ShortShortInt(v) => v.to_string(),
        AMQPValue::ShortShortUInt(v) => v.to_string(),
        AMQPValue::ShortInt(v) => v.to_string(),
        AMQPValue::ShortUInt(v) => v.to_string(),
        AMQPValue::LongInt(v) => v.to_string(),
        AMQPValue::LongUInt(v) => v.to_string(),
        AMQPValue::LongLongInt(v) => v.to_string(),
        AMQPValue::Boolean(v) => v.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::LongString;

    #[test]
    fn a_replay_copy_keeps_the_message_and_starts_its_attempts_again() {
        let mut table = FieldTable::default();
        for (name, value) in [
            (headers::ERROR, "book missing"),
            (headers::ORIGINAL_QUEUE, "q"),
            (headers::DEAD_LETTERED_AT, "2026-01-01T00:00:00Z"),
            (headers::FIRST_FAILED_AT, "2026-01-01T00:00:00Z"),
            (headers::LAST_ERROR, "book missing"),
            (headers::TIMESTAMP, "2026-01-01T00:00:00Z"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
        ] {
            table.insert(name.into(), AMQPValue::LongString(LongString::from(value)));
        }
        table.insert(headers::ATTEMPTS.into(), AMQPValue::LongUInt(10));
        table.insert(headers::ATTEMPT.into(), AMQPValue::LongUInt(10));
        table.insert(headers::VERSION.into(), AMQPValue::LongUInt(2));
        let parked = BasicProperties::default()
            .with_message_id("5f0c8f6e-3c1c-4a57-9a43-6d0f3e1f5c11".into())
            .with_headers(table);
        let copy = replay_properties(&parked);
        assert_eq!(copy.message_id(), parked.message_id());
        assert_eq!(*copy.delivery_mode(), Some(PERSISTENT));
        assert_eq!(wire::attempt(&copy), 1);
        let copied = copy.headers().clone().unwrap_or_default();
        let names: Vec<&str> = copied.inner().keys().map(|name| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "traceparent",
                headers::ATTEMPT,
                headers::TIMESTAMP,
                headers::VERSION
            ]
        );
    }
}
