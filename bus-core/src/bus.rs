//! The two sending sides of a bus, as object-safe traits, and their typed
//! helpers: commands are *sent*, events are *published*.

use std::{future::Future, pin::Pin};

use crate::{Command, DispatchError, Envelope, Event};

/// A boxed, sendable future (what object-safe async methods return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Accepts commands for their one handler.
///
/// What "accepted" means depends on the bus: handled (in-memory sync),
/// queued (in-memory async), or confirmed persistent by the broker
/// (RabbitMQ). In every case `Ok` is a promise that the command will be
/// applied or, if it keeps failing, kept as a dead letter.
pub trait CommandBus: Send + Sync + 'static {
    /// Sends an already-built envelope.
    fn send_envelope(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>>;

    /// Former name of [`CommandBus::send_envelope`].
    #[deprecated(note = "renamed `send_envelope`, paired with `EventBus::publish_envelope`")]
    fn dispatch(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
        self.send_envelope(envelope)
    }
}

/// Publishes domain events to every subscriber.
pub trait EventBus: Send + Sync + 'static {
    /// Publishes an already-built envelope.
    fn publish_envelope(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>>;

    /// Publishes several envelopes and returns one result per envelope, in
    /// order (what an outbox relay does with a batch of staged events).
    ///
    /// The default publishes them concurrently with
    /// [`publish_envelope`](Self::publish_envelope); a transport may do
    /// better (the RabbitMQ publisher sends them all on one channel, then
    /// awaits every confirm).
    fn publish_batch(
        &self,
        envelopes: Vec<Envelope>,
    ) -> BoxFuture<'_, Vec<Result<(), DispatchError>>> {
        Box::pin(futures::future::join_all(
            envelopes
                .into_iter()
                .map(|envelope| self.publish_envelope(envelope)),
        ))
    }
}

/// Typed helpers over [`CommandBus`].
pub trait CommandBusExt: CommandBus {
    /// Wraps `command` in a new envelope and sends it.
    fn send<C: Command>(&self, command: &C) -> BoxFuture<'_, Result<(), DispatchError>> {
        match Envelope::new(command) {
            Ok(envelope) => self.send_envelope(envelope),
            Err(error) => Box::pin(std::future::ready(Err(error.into()))),
        }
    }
}

impl<B: CommandBus + ?Sized> CommandBusExt for B {}

/// Typed helpers over [`EventBus`].
pub trait EventBusExt: EventBus {
    /// Wraps `event` in a new envelope and publishes it.
    fn publish<E: Event>(&self, event: &E) -> BoxFuture<'_, Result<(), DispatchError>> {
        match Envelope::new(event) {
            Ok(envelope) => self.publish_envelope(envelope),
            Err(error) => Box::pin(std::future::ready(Err(error.into()))),
        }
    }

    /// Former name of [`EventBusExt::publish`].
    #[deprecated(note = "renamed `publish`, paired with `CommandBusExt::send`")]
    fn publish_event<E: Event>(&self, event: &E) -> BoxFuture<'_, Result<(), DispatchError>> {
        self.publish(event)
    }
}

impl<B: EventBus + ?Sized> EventBusExt for B {}

impl<B: CommandBus + ?Sized> CommandBus for std::sync::Arc<B> {
    fn send_envelope(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
        (**self).send_envelope(envelope)
    }
}

impl<B: EventBus + ?Sized> EventBus for std::sync::Arc<B> {
    fn publish_envelope(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
        (**self).publish_envelope(envelope)
    }

    fn publish_batch(
        &self,
        envelopes: Vec<Envelope>,
    ) -> BoxFuture<'_, Vec<Result<(), DispatchError>>> {
        (**self).publish_batch(envelopes)
    }
}
