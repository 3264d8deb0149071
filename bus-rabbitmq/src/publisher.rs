//! [`RabbitPublisher`]: the sending side, for commands and events.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bus_core::{BoxFuture, CommandBus, DispatchError, Envelope, EventBus};
use deadpool::managed::{self, Metrics, Object, RecycleError, RecycleResult};
use lapin::{
    options::{ConfirmSelectOptions, QueueDeclareOptions},
    types::FieldTable,
    Channel, Connection, ConnectionProperties, ConnectionStatus,
};
use tokio::time::Instant;

use crate::{
    confirm::{publish_confirmed, PublishFailure},
    wire, BrokerAddresses, Naming, RabbitConfig, RabbitError, Topology,
};

/// Publishes commands and events to RabbitMQ, each confirmed by the broker.
///
/// Every publish is persistent (`delivery_mode` 2) and `mandatory`, on a
/// confirm-mode channel taken from a pool, and returns only once the broker
/// confirmed it, or failed. A channel carries one unconfirmed publish at a
/// time (so that a returned message is attributed to the publish it belongs
/// to), so `publisher_channels` bounds the publishes in flight:
///
/// | what happened | result |
/// |---|---|
/// | broker acknowledged, message routed | `Ok(())` |
/// | negative confirm | [`DispatchError::Refused`] |
/// | unroutable (no queue bound for that command) | [`DispatchError::Refused`] |
/// | no channel or connection, channel error, no confirm within `confirm_timeout` | [`DispatchError::Unavailable`] |
///
/// A publish never takes longer than [`RabbitConfig::confirm_timeout`], so
/// while the broker is down publishes fail fast. A channel that failed is
/// dropped, and so is the pooled connection: the next publish connects
/// anew (with several broker addresses, starting with the next one: see
/// [`BrokerAddresses`]), and every new connection re-declares the
/// [`Topology`] before use,
/// so the publisher recovers by itself once the broker is back.
///
/// Events with no subscriber are not an error: the events exchange's
/// alternate exchange keeps them in `{ns}.events.unrouted`.
///
/// Cheap to clone; clones share the pools.
#[derive(Clone)]
pub struct RabbitPublisher {
    inner: Arc<Inner>,
}

struct Inner {
    channels: managed::Pool<ChannelManager>,
    naming: Naming,
    confirm_timeout: Duration,
}

impl std::fmt::Debug for RabbitPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RabbitPublisher")
            .field("namespace", &self.inner.naming.namespace())
            .field("channels", &self.inner.channels.status())
            .finish_non_exhaustive()
    }
}

impl RabbitPublisher {
    /// A publisher for `config`'s broker that declares `topology` on every
    /// new connection. Does not connect yet: the first publish (or
    /// [`RabbitPublisher::ensure_connected`]) does.
    ///
    /// Exchange names come from `topology`'s namespace; build it with
    /// [`RabbitConfig::topology`] so publisher and worker agree on names,
    /// queue type and delay queues.
    pub fn new(config: &RabbitConfig, topology: Topology) -> Result<Self, RabbitError> {
        let addresses = config.addresses()?;
        let naming = topology.naming().clone();
        let connection_name = format!("{} (publisher)", config.connection_name);
        let connections = managed::Pool::builder(ConnectionManager {
            addresses,
            properties: ConnectionProperties::default()
                .with_connection_name(connection_name.as_str().into()),
            attempt_timeout: config.connect_timeout,
            topology,
        })
        .max_size(1)
        .build()
        .map_err(|error| RabbitError::Pool(error.to_string()))?;
        let channels = managed::Pool::builder(ChannelManager {
            connections,
            generation: AtomicU64::new(0),
        })
        .max_size(config.publisher_channels.max(1))
        .build()
        .map_err(|error| RabbitError::Pool(error.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                channels,
                naming,
                confirm_timeout: config.confirm_timeout,
            }),
        })
    }

    /// [`RabbitPublisher::new`], then [`RabbitPublisher::ensure_connected`]:
    /// fails if the broker cannot be reached now.
    pub async fn connect(config: &RabbitConfig, topology: Topology) -> Result<Self, RabbitError> {
        let publisher = Self::new(config, topology)?;
        publisher.ensure_connected().await?;
        Ok(publisher)
    }

    /// Makes sure a connection is open and the topology declared, within the
    /// confirm timeout.
    pub async fn ensure_connected(&self) -> Result<(), RabbitError> {
        let deadline = Instant::now() + self.inner.confirm_timeout;
        match tokio::time::timeout_at(deadline, self.inner.channels.get()).await {
            Ok(Ok(_channel)) => Ok(()),
            Ok(Err(error)) => {
                self.reset();
                Err(RabbitError::Connect(Box::new(error)))
            }
            Err(elapsed) => {
                self.reset();
                Err(RabbitError::Connect(Box::new(elapsed)))
            }
        }
    }

    /// How many messages are ready in each of `queues`, read with passive
    /// declares on a channel of its own, all within the confirm timeout
    /// (for gauges: a slow broker is skipped, not waited for).
    pub async fn queue_depths(&self, queues: &[String]) -> Result<Vec<(String, u32)>, RabbitError> {
        let deadline = Instant::now() + self.inner.confirm_timeout;
        let read = async {
            let connection = self
                .inner
                .channels
                .manager()
                .connections
                .get()
                .await
                .map_err(|error| RabbitError::Connect(Box::new(error)))?;
            let channel = connection
                .create_channel()
                .await
                .map_err(RabbitError::Channel)?;
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            let mut depths = Vec::with_capacity(queues.len());
            for queue in queues {
                let declared = channel
                    .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                    .await
                    .map_err(|source| RabbitError::Declare {
                        what: format!("queue {queue} (passive)"),
                        source,
                    })?;
                depths.push((queue.clone(), declared.message_count()));
            }
            // Best effort: a channel the broker closed is gone anyway.
            let _ = channel.close(200, "OK".into()).await;
            Ok(depths)
        };
        match tokio::time::timeout_at(deadline, read).await {
            Ok(result) => result,
            Err(elapsed) => Err(RabbitError::Connect(Box::new(elapsed))),
        }
    }

    /// The names this publisher routes with.
    pub fn naming(&self) -> &Naming {
        &self.inner.naming
    }

    /// Stops the publisher: pooled channels and the connection are closed;
    /// later publishes fail with [`DispatchError::Unavailable`].
    pub fn close(&self) {
        self.inner.channels.close();
        self.inner.channels.manager().connections.close();
    }

    /// Publishes `envelope` on `exchange` with its type as routing key and
    /// waits for the broker's confirm.
    async fn publish_to(&self, exchange: String, envelope: Envelope) -> Result<(), DispatchError> {
        let started = Instant::now();
        let result = self.publish_confirmed_to(exchange, &envelope).await;
        let outcome = match &result {
            Ok(()) => "sent",
            Err(DispatchError::Refused { .. }) => "refused",
            Err(_) => "unavailable",
        };
        bus_core::metrics::record_sent(&envelope.message_type, outcome, Some(started.elapsed()));
        result
    }

    /// [`Self::publish_to`] without its metrics.
    async fn publish_confirmed_to(
        &self,
        exchange: String,
        envelope: &Envelope,
    ) -> Result<(), DispatchError> {
        let deadline = Instant::now() + self.inner.confirm_timeout;
        let (properties, body) =
            wire::encode(envelope, 1).map_err(|error| DispatchError::Refused {
                reason: error.to_string(),
            })?;
        let channel = match tokio::time::timeout_at(deadline, self.inner.channels.get()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(error)) => {
                self.reset();
                tracing::warn!(message_id = %envelope.id, message_type = %envelope.message_type, %error, "publish failed: no channel to the broker");
                return Err(DispatchError::Unavailable {
                    reason: format!("no channel to the broker: {error}"),
                    source: Some(Box::new(error)),
                });
            }
            Err(_elapsed) => {
                self.reset();
                tracing::warn!(message_id = %envelope.id, message_type = %envelope.message_type, "publish failed: no channel to the broker in time");
                return Err(DispatchError::Unavailable {
                    reason: "no channel to the broker before the confirm timeout".to_owned(),
                    source: None,
                });
            }
        };
        // The channel is held until the confirm arrived: lapin hands a
        // returned (unroutable) message to the next confirm completed on its
        // channel, not to the publish it belongs to, so a second unconfirmed
        // publish on the same channel could take this one's refusal.
        let result = publish_confirmed(
            &channel.channel,
            &exchange,
            &envelope.message_type,
            properties,
            &body,
            deadline,
        )
        .await;
        match result {
            Ok(()) => {
                tracing::debug!(message_id = %envelope.id, message_type = %envelope.message_type, %exchange, "published and confirmed");
                Ok(())
            }
            Err(failure @ PublishFailure::Refused(_)) => {
                tracing::warn!(message_id = %envelope.id, message_type = %envelope.message_type, %exchange, %failure, "publish refused");
                Err(failure.into())
            }
            Err(failure @ PublishFailure::Unavailable { .. }) => {
                // Never hand this channel out again. Channels of this
                // connection still in use are refused when they come back;
                // the next publish opens a new connection.
                drop(Object::take(channel));
                self.reset();
                tracing::warn!(message_id = %envelope.id, message_type = %envelope.message_type, %exchange, %failure, "publish failed");
                Err(failure.into())
            }
        }
    }

    /// [`EventBus::publish_batch`] without its metrics: every event sent on
    /// one channel, then every confirm awaited.
    async fn publish_pipelined(&self, envelopes: &[Envelope]) -> Vec<Result<(), DispatchError>> {
        let unavailable = |reason: &str| {
            envelopes
                .iter()
                .map(|_| {
                    Err(DispatchError::Unavailable {
                        reason: reason.to_owned(),
                        source: None,
                    })
                })
                .collect::<Vec<_>>()
        };
        if envelopes.is_empty() {
            return Vec::new();
        }
        let deadline = Instant::now() + self.inner.confirm_timeout;
        let exchange = self.inner.naming.events_exchange();
        let channel = match tokio::time::timeout_at(deadline, self.inner.channels.get()).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(error)) => {
                self.reset();
                tracing::warn!(events = envelopes.len(), %error, "batch publish failed: no channel to the broker");
                return unavailable(&format!("no channel to the broker: {error}"));
            }
            Err(_elapsed) => {
                self.reset();
                return unavailable("no channel to the broker before the confirm timeout");
            }
        };
        let Ok(exchange_name) = crate::naming::short(&exchange) else {
            return unavailable("events exchange name too long");
        };
        let options = lapin::options::BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        // Send everything first; each send waits only for the frame to be
        // written, not for the broker.
        let mut pending = Vec::with_capacity(envelopes.len());
        let mut broken = None;
        for envelope in envelopes {
            let (properties, body) = match wire::encode(envelope, 1) {
                Ok(encoded) => encoded,
                Err(error) => {
                    pending.push(Err(DispatchError::Refused {
                        reason: error.to_string(),
                    }));
                    continue;
                }
            };
            let Ok(routing_key) = crate::naming::short(&envelope.message_type) else {
                pending.push(Err(DispatchError::Refused {
                    reason: format!("message type {} too long", envelope.message_type),
                }));
                continue;
            };
            let sent = tokio::time::timeout_at(
                deadline,
                channel.channel.basic_publish(
                    exchange_name.clone(),
                    routing_key,
                    options,
                    &body,
                    properties,
                ),
            )
            .await;
            match sent {
                Ok(Ok(confirm)) => pending.push(Ok(confirm)),
                Ok(Err(error)) => {
                    broken = Some(error.to_string());
                    break;
                }
                Err(_elapsed) => {
                    broken = Some("sending timed out".to_owned());
                    break;
                }
            }
        }
        if let Some(reason) = broken {
            drop(Object::take(channel));
            self.reset();
            tracing::warn!(events = envelopes.len(), %reason, "batch publish failed");
            return unavailable(&reason);
        }
        // Then await every confirm.
        let confirms = futures::future::join_all(pending.into_iter().map(|sent| async move {
            match sent {
                Ok(confirm) => Some(tokio::time::timeout_at(deadline, confirm).await),
                Err(refused) => {
                    drop(refused);
                    None
                }
            }
        }));
        let confirms = confirms.await;
        let mut returned = false;
        let mut lost = false;
        let mut results = Vec::with_capacity(envelopes.len());
        for confirm in confirms {
            results.push(match confirm {
                None => Err(DispatchError::Refused {
                    reason: "the event could not be encoded".to_owned(),
                }),
                Some(Ok(Ok(lapin::Confirmation::Ack(None)))) => Ok(()),
                Some(Ok(Ok(lapin::Confirmation::Ack(Some(_))))) => {
                    returned = true;
                    Ok(())
                }
                Some(Ok(Ok(lapin::Confirmation::Nack(_)))) => Err(DispatchError::Refused {
                    reason: "negative publisher confirm (broker could not store the message)"
                        .to_owned(),
                }),
                Some(Ok(Ok(lapin::Confirmation::NotRequested)))
                | Some(Ok(Err(_)))
                | Some(Err(_)) => {
                    lost = true;
                    Err(DispatchError::Unavailable {
                        reason: "no publisher confirm before the deadline".to_owned(),
                        source: None,
                    })
                }
            });
        }
        if lost {
            drop(Object::take(channel));
            self.reset();
        }
        if returned {
            tracing::warn!(
                events = envelopes.len(),
                "an event of the batch was returned unroutable; the batch is reported refused"
            );
            return envelopes
                .iter()
                .map(|_| {
                    Err(DispatchError::Refused {
                        reason: "an event of its batch was returned unroutable".to_owned(),
                    })
                })
                .collect();
        }
        results
    }

    /// Forgets every idle channel and the connection: the next publish
    /// connects anew (and re-declares the topology). Channels in use are
    /// refused when they come back.
    fn reset(&self) {
        let manager = self.inner.channels.manager();
        manager.generation.fetch_add(1, Ordering::SeqCst);
        drop(self.inner.channels.retain(|_, _| false));
        drop(manager.connections.retain(|_, _| false));
    }
}

impl CommandBus for RabbitPublisher {
    /// Sends the command to `{ns}.commands`, routed by its type to
    /// `{ns}.command.{Type}`. Refused if no such queue is bound.
    fn send_envelope(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
        Box::pin(self.publish_to(self.inner.naming.commands_exchange(), envelope))
    }
}

impl EventBus for RabbitPublisher {
    /// Publishes the event to `{ns}.events`, routed by its type to every
    /// subscriber queue, or to `{ns}.events.unrouted` if there is none.
    fn publish_envelope(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
        Box::pin(self.publish_to(self.inner.naming.events_exchange(), envelope))
    }

    /// Publishes the events to `{ns}.events` with pipelined confirms: all
    /// sent on one confirm-mode channel, then every confirm awaited, within
    /// one `confirm_timeout`. Each event's result is its own confirm.
    ///
    /// Several unconfirmed publishes share the channel, which is safe for
    /// events only: the events exchange's alternate exchange routes every
    /// event somewhere, so the broker returns none. Should it return one
    /// anyway (the topology damaged), the returned message cannot be told
    /// apart, so every event of the batch is reported refused: an outbox
    /// keeps them and publishes them again (subscribers are idempotent).
    fn publish_batch(
        &self,
        envelopes: Vec<Envelope>,
    ) -> BoxFuture<'_, Vec<Result<(), DispatchError>>> {
        Box::pin(async move {
            let started = Instant::now();
            let results = self.publish_pipelined(&envelopes).await;
            let elapsed = started.elapsed();
            for (envelope, result) in envelopes.iter().zip(&results) {
                let outcome = match result {
                    Ok(()) => "sent",
                    Err(DispatchError::Refused { .. }) => "refused",
                    Err(_) => "unavailable",
                };
                bus_core::metrics::record_sent(&envelope.message_type, outcome, Some(elapsed));
            }
            results
        })
    }
}

/// Opens the publisher's connection: to the first broker address that
/// answers ([`BrokerAddresses`]), declaring the topology before any channel
/// of it is used.
struct ConnectionManager {
    addresses: BrokerAddresses,
    properties: ConnectionProperties,
    attempt_timeout: Duration,
    topology: Topology,
}

impl managed::Manager for ConnectionManager {
    type Type = Connection;
    type Error = RabbitError;

    async fn create(&self) -> Result<Connection, RabbitError> {
        let (connection, address) = self
            .addresses
            .connect(&self.properties, self.attempt_timeout)
            .await?;
        let declared = async {
            let channel = connection
                .create_channel()
                .await
                .map_err(RabbitError::Channel)?;
            let declared = self.topology.declare(&channel).await;
            // A failed declaration closes the channel itself; ignore the echo.
            let _ = channel.close(200, "OK".into()).await;
            declared
        }
        .await;
        match declared {
            Ok(()) => {
                tracing::info!(
                    namespace = self.topology.naming().namespace(),
                    %address,
                    "publisher connected, topology declared"
                );
                Ok(connection)
            }
            Err(error) => {
                tracing::error!(%address, %error, "publisher connected but cannot declare the topology");
                let _ = connection.close(200, "OK".into()).await;
                Err(error)
            }
        }
    }

    async fn recycle(
        &self,
        connection: &mut Connection,
        _: &Metrics,
    ) -> RecycleResult<RabbitError> {
        if connection.status().connected() {
            Ok(())
        } else {
            Err(RecycleError::message("connection lost"))
        }
    }
}

/// A confirm-mode channel and the connection it lives on.
struct ConfirmChannel {
    channel: Channel,
    connection: ConnectionStatus,
    generation: u64,
}

/// Opens confirm-mode channels on the pooled connection.
struct ChannelManager {
    connections: managed::Pool<ConnectionManager>,
    /// Bumped by every reset; channels of an older generation are not reused.
    generation: AtomicU64,
}

/// Opening a pooled channel failed.
#[derive(Debug, thiserror::Error)]
enum ChannelError {
    #[error("no connection to the broker: {0}")]
    Connection(#[source] managed::PoolError<RabbitError>),
    #[error("cannot open a confirm-mode channel: {0}")]
    Channel(#[source] lapin::Error),
}

impl managed::Manager for ChannelManager {
    type Type = ConfirmChannel;
    type Error = ChannelError;

    async fn create(&self) -> Result<ConfirmChannel, ChannelError> {
        let generation = self.generation.load(Ordering::SeqCst);
        let connection = self
            .connections
            .get()
            .await
            .map_err(ChannelError::Connection)?;
        let channel = connection
            .create_channel()
            .await
            .map_err(ChannelError::Channel)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(ChannelError::Channel)?;
        Ok(ConfirmChannel {
            channel,
            connection: connection.status().clone(),
            generation,
        })
    }

    async fn recycle(
        &self,
        channel: &mut ConfirmChannel,
        _: &Metrics,
    ) -> RecycleResult<ChannelError> {
        if channel.generation != self.generation.load(Ordering::SeqCst) {
            return Err(RecycleError::message("channel of a reset connection"));
        }
        if !channel.connection.connected() {
            return Err(RecycleError::message("connection lost"));
        }
        if !channel.channel.status().connected() {
            return Err(RecycleError::message("channel closed"));
        }
        Ok(())
    }
}
