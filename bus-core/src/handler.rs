//! What application code implements: handlers for commands, events and queries.

use std::{future::Future, marker::PhantomData, sync::Arc};

use crate::{batch::BatchSlot, error::QueryError, Command, Envelope, Event, HandlerError, Query};

/// What a handler knows about the message it is handling besides its payload.
#[derive(Debug, Clone)]
pub struct MessageContext {
    envelope: Arc<Envelope>,
    attempt: u32,
    max_attempts: u32,
    /// Set while the message runs as part of a batch: where its chain hands
    /// the decoded message to the batch.
    batch: Option<BatchSlot>,
}

impl MessageContext {
    /// Context for `envelope` on delivery attempt `attempt` (1-based) of `max_attempts`.
    pub fn new(envelope: Arc<Envelope>, attempt: u32, max_attempts: u32) -> Self {
        Self {
            envelope,
            attempt: attempt.max(1),
            max_attempts: max_attempts.max(1),
            batch: None,
        }
    }

    /// This context as a member of a batch.
    pub(crate) fn in_batch(mut self, slot: BatchSlot) -> Self {
        self.batch = Some(slot);
        self
    }

    /// Takes the batch membership out of the context (a batch handler's
    /// endpoint does, before the handler sees the context).
    pub(crate) fn take_batch_slot(&mut self) -> Option<BatchSlot> {
        self.batch.take()
    }

    /// The same context for another version of the envelope (upcasting).
    pub(crate) fn with_envelope(&self, envelope: Arc<Envelope>) -> Self {
        Self {
            envelope,
            ..self.clone()
        }
    }

    /// The envelope being handled (id, type, headers...).
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The envelope, shared.
    pub(crate) fn envelope_arc(&self) -> Arc<Envelope> {
        self.envelope.clone()
    }

    /// This delivery's attempt number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How many attempts the bus will make in total.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// True when a retryable error now would dead-letter the message instead
    /// of retrying it: the place for a handler to record a business outcome
    /// ("order rejected: offer not found") rather than give up silently.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }

    /// Wraps an event raised by this handler in an envelope that carries the
    /// trace and correlation of the message being handled.
    pub fn event_envelope<E: Event>(&self, event: &E) -> Result<Envelope, crate::EncodeError> {
        Ok(Envelope::new(event)?.caused_by(&self.envelope))
    }
}

/// Applies one command type. Exactly one handler exists per command.
///
/// Return [`HandlerError::Retryable`] for failures that may pass (a missing
/// prerequisite, a database hiccup) and [`HandlerError::Permanent`] for the
/// rest. A handler may be called more than once for the same message
/// (at-least-once delivery): make its effect idempotent.
pub trait CommandHandler<C: Command>: Send + Sync + 'static {
    /// Applies `command`.
    fn handle(
        &self,
        command: C,
        context: MessageContext,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Reacts to one event type. Any number of subscribers exist per event, each
/// registered under its own name.
pub trait EventHandler<E: Event>: Send + Sync + 'static {
    /// Reacts to `event`.
    fn handle(
        &self,
        event: E,
        context: MessageContext,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// Answers one query type.
pub trait QueryHandler<Q: Query>: Send + Sync + 'static {
    /// Answers `query`.
    fn handle(&self, query: Q) -> impl Future<Output = Result<Q::Output, QueryError>> + Send;
}

/// A command handler made from an async closure; see [`command_fn`].
pub struct CommandFn<F, C> {
    f: F,
    _command: PhantomData<fn(C)>,
}

/// Turns `async |command, context| -> Result<(), HandlerError>` into a
/// [`CommandHandler`].
pub fn command_fn<C, F, Fut>(f: F) -> CommandFn<F, C>
where
    C: Command,
    F: Fn(C, MessageContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    CommandFn {
        f,
        _command: PhantomData,
    }
}

impl<C, F, Fut> CommandHandler<C> for CommandFn<F, C>
where
    C: Command,
    F: Fn(C, MessageContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(
        &self,
        command: C,
        context: MessageContext,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (self.f)(command, context)
    }
}

/// An event handler made from an async closure; see [`event_fn`].
pub struct EventFn<F, E> {
    f: F,
    _event: PhantomData<fn(E)>,
}

/// Turns `async |event, context| -> Result<(), HandlerError>` into an
/// [`EventHandler`].
pub fn event_fn<E, F, Fut>(f: F) -> EventFn<F, E>
where
    E: Event,
    F: Fn(E, MessageContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    EventFn {
        f,
        _event: PhantomData,
    }
}

impl<E, F, Fut> EventHandler<E> for EventFn<F, E>
where
    E: Event,
    F: Fn(E, MessageContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(
        &self,
        event: E,
        context: MessageContext,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (self.f)(event, context)
    }
}
