//! What application code implements: handlers for commands, events and queries.

use std::{future::Future, marker::PhantomData, sync::Arc};

use crate::{
    batch::BatchSlot, error::QueryError, Command, Envelope, Event, HandlerError, Query,
    TraceContext,
};

/// What a handler knows about the message it is handling besides its payload.
#[derive(Debug, Clone)]
pub struct MessageContext {
    envelope: Arc<Envelope>,
    attempt: u32,
    max_attempts: u32,
    trace: TraceContext,
    /// Set while the message runs as part of a batch: where its chain hands
    /// the decoded message to the batch.
    batch: Option<BatchSlot>,
    /// Set on the durable bus: the queue row being delivered.
    receipt: Option<Receipt>,
}

/// The acknowledgement of one message delivered by the durable bus
/// (`DurableBus`, features `postgres` and `sqlite`): the id of its
/// `bus_messages` row, for the handler to record in the transaction of its
/// effect (`durable::postgres::record_receipts`,
/// `durable::sqlite::record_receipts`), so that the effect and the
/// acknowledgement commit together.
///
/// A row whose receipt is committed is done: the bus deletes it (and the
/// receipt) without running its handler again, even when the handler
/// returned an error after recording it, or the process died before it
/// could delete the row. See [`MessageContext::durable_receipt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Receipt {
    row: i64,
}

impl Receipt {
    /// The receipt of the queue row `row`.
    #[cfg_attr(not(any(feature = "postgres", feature = "sqlite")), allow(dead_code))]
    pub(crate) fn new(row: i64) -> Self {
        Self { row }
    }

    /// The id of the `bus_messages` row this receipt acknowledges.
    pub fn row(&self) -> i64 {
        self.row
    }
}

impl MessageContext {
    /// Context for `envelope` on delivery attempt `attempt` (1-based) of
    /// `max_attempts`, handled in a new span of the envelope's trace (a new
    /// trace if the envelope carries none).
    pub fn new(envelope: Arc<Envelope>, attempt: u32, max_attempts: u32) -> Self {
        let trace = envelope
            .trace_context()
            .map(|parent| parent.child())
            .unwrap_or_else(TraceContext::new_root);
        Self {
            envelope,
            attempt: attempt.max(1),
            max_attempts: max_attempts.max(1),
            trace,
            batch: None,
            receipt: None,
        }
    }

    /// This context for a delivery of the durable bus's queue row `receipt`.
    pub(crate) fn with_receipt(mut self, receipt: Option<Receipt>) -> Self {
        self.receipt = receipt;
        self
    }

    /// The receipt of this delivery on the durable bus (`DurableBus`), to
    /// record in the transaction of the handler's effect for an
    /// exactly-once effect (`durable::postgres::record_receipts`,
    /// `durable::sqlite::record_receipts`); `None` on every other bus,
    /// where recording is not needed and the functions do nothing.
    ///
    /// Record it only in a transaction whose commit means the message is
    /// done: once committed, the message is acknowledged whatever the
    /// handler returns, so a message to retry or to dead-letter must not
    /// have its receipt recorded.
    pub fn durable_receipt(&self) -> Option<Receipt> {
        self.receipt
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

    /// The same context, handled in the span `trace` (e.g. the one a bus
    /// already opened for this delivery).
    pub fn with_trace(mut self, trace: TraceContext) -> Self {
        self.trace = trace;
        self
    }

    /// The trace context of the handler's span: the envelope's trace id and
    /// this handling's own span id (its parent is the envelope's
    /// `traceparent`). Events raised with [`MessageContext::event_envelope`]
    /// name this span as their parent.
    pub fn trace(&self) -> TraceContext {
        self.trace
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
    /// trace and correlation of the message being handled: same trace id and
    /// correlation id, the handled message as causation, and this handler's
    /// span ([`MessageContext::trace`]) as the `traceparent`, so the event's
    /// subscribers are children of this handling in the trace.
    pub fn event_envelope<E: Event>(&self, event: &E) -> Result<Envelope, crate::EncodeError> {
        Ok(Envelope::new(event)?
            .caused_by(&self.envelope)
            .with_trace_context(&self.trace))
    }
}

/// Applies one command type. Exactly one handler exists per command.
///
/// Return [`HandlerError::Retryable`] for failures that may pass (a missing
/// prerequisite, a database hiccup) and [`HandlerError::Permanent`] for the
/// rest. A handler may be called more than once for the same message
/// (at-least-once delivery): make its effect idempotent. On the durable bus,
/// recording [`MessageContext::durable_receipt`] in the transaction of the
/// effect makes the effect exactly-once instead.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Message, TraceContext};

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Raised;
    impl Message for Raised {
        const NAME: &'static str = "test.Raised";
    }
    impl Event for Raised {}

    #[test]
    fn a_raised_event_is_sent_from_the_handler_span_of_the_same_trace() {
        let request = TraceContext::new_root();
        let command = Envelope::new(&Raised).unwrap().with_trace_context(&request);
        let context = MessageContext::new(Arc::new(command), 1, 1);
        let handling = context.trace();
        assert_eq!(handling.trace_id, request.trace_id);
        assert_ne!(handling.span_id, request.span_id);

        let event = context.event_envelope(&Raised).unwrap();
        let sent_from = event.trace_context().unwrap();
        assert_eq!(sent_from, handling);
    }
}
