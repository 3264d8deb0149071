//! Batch handlers: one call, usually one transaction, for many messages of
//! one type, each message still settled on its own. See [`BatchHandler`].

use std::{any::Any, future::Future, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::{
    bus::BoxFuture, settlement::panic_message, FailureKind, HandlerError, Message, MessageContext,
};

/// The result of one [`BatchHandler::handle_batch`] call: one outcome per
/// message, in the batch's order, or the whole call's failure.
pub type BatchOutcome = Result<Vec<Result<(), HandlerError>>, HandlerError>;

/// How a transport collects a batch for a [`BatchHandler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most messages in one call. `1` (or `0`) disables batching: the
    /// handler is called with one message at a time, exactly like a plain
    /// handler. The RabbitMQ worker's prefetch must be at least this.
    pub max_messages: usize,
    /// Longest a transport waits, after the first message of a batch, for
    /// more to arrive before it runs what it has.
    pub linger: Duration,
}

impl BatchConfig {
    /// Batches of up to `max_messages`, waiting at most `linger` for more.
    pub fn new(max_messages: usize, linger: Duration) -> Self {
        Self {
            max_messages,
            linger,
        }
    }

    /// One message at a time: no batching.
    pub fn disabled() -> Self {
        Self::new(1, Duration::ZERO)
    }

    /// Whether transports collect more than one message per call.
    pub fn is_batching(&self) -> bool {
        self.max_messages > 1
    }
}

impl Default for BatchConfig {
    /// 50 messages or 5 ms, whichever first.
    fn default() -> Self {
        Self::new(50, Duration::from_millis(5))
    }
}

/// Applies a batch of messages of one type (a [`Command`](crate::Command)
/// or an [`Event`](crate::Event)) in one call, returning one outcome per
/// message.
///
/// It is registered with [`HandlersBuilder::command_batch`] (one handler
/// per command still) or [`HandlersBuilder::subscribe_batch`] and a
/// [`BatchConfig`]: the
/// asynchronous transports (the [`AsyncBus`](crate::AsyncBus), the RabbitMQ
/// worker) collect up to [`BatchConfig::max_messages`] messages of its
/// queue, or as many as arrived within [`BatchConfig::linger`] of the first,
/// whichever comes first, and run them in one call; the
/// durable bus (`DurableBus`, features `postgres` and `sqlite`) runs the rows of its queue it claimed
/// together (up to `max_messages` per call, no linger). Any other bus (the
/// sync bus, a transport that does not batch) calls it with batches of one,
/// so a batch handler works everywhere.
///
/// ## What each message goes through
///
/// Each message of a batch keeps its own `handle` span, panic catching,
/// middleware, upcasting and decoding, exactly as with a plain handler. The
/// messages that reach the end of their chain meet there and run as one
/// batch, inside a `handle_batch` span naming their ids; the outcome of each
/// goes back up its own chain and is settled by the one policy
/// ([`decide`](crate::transport::decide)): ack, retry with backoff,
/// dead-letter, or keep behind the breaker. A message whose decoding fails
/// (or a middleware refuses) never joins the batch and is settled alone.
///
/// ## When the batch as a whole fails
///
/// | the call | what happens |
/// |---|---|
/// | `Ok(outcomes)`, one per message | each message settled by its outcome |
/// | `Err` of kind [`FailureKind::Infrastructure`] | every message kept, attempt not counted (breaker) |
/// | any other `Err`, a panic, or the wrong number of outcomes | split: the handler runs again once per message, with a batch of one, and each message is settled by its own result |
///
/// The split isolates a poison message: its neighbours are applied, and it
/// alone is retried or dead-lettered. It does not count as an attempt: the
/// messages are still on the delivery they came with.
///
/// ## Writing one
///
/// Apply the whole batch in one transaction, or none of it. A message the
/// handler refuses on its own (invalid, a prerequisite missing) gets an
/// `Err` outcome while the others are applied; an error that breaks the
/// transaction is returned as the whole call's `Err`, and the split runs the
/// messages again one by one. As with every handler, a message may be seen
/// more than once (a redelivered batch): make the effect idempotent, or, on
/// the durable bus, record the receipts of the messages the transaction
/// completes ([`MessageContext::durable_receipt`]) in it, in one statement.
///
/// [`HandlersBuilder::command_batch`]: crate::HandlersBuilder::command_batch
/// [`HandlersBuilder::subscribe_batch`]: crate::HandlersBuilder::subscribe_batch
pub trait BatchHandler<M: Message>: Send + Sync + 'static {
    /// Applies `batch` (never empty): `Ok` with exactly one outcome per
    /// message, in order, or `Err` if the batch as a whole failed (its
    /// transaction rolled back), which is retried message by message.
    fn handle_batch(
        &self,
        batch: &[(M, MessageContext)],
    ) -> impl Future<Output = BatchOutcome> + Send;
}

/// A decoded message travelling to the batch endpoint, type-erased.
pub(crate) type AnyMessage = Box<dyn Any + Send>;

/// The typed batch runner of one handler, type-erased: runs the messages
/// (split on a whole failure) and returns one result per message.
pub(crate) type BatchEndpoint = dyn Fn(Vec<(AnyMessage, MessageContext)>) -> BoxFuture<'static, Vec<Result<(), HandlerError>>>
    + Send
    + Sync;

/// A message that reached the end of its chain and waits for its batch.
pub(crate) struct Arrival {
    pub(crate) index: usize,
    pub(crate) message: AnyMessage,
    pub(crate) context: MessageContext,
    pub(crate) reply: oneshot::Sender<Result<(), HandlerError>>,
}

/// Where a message's chain hands its decoded message when it runs as part of
/// a batch; carried (hidden) by its [`MessageContext`].
#[derive(Clone)]
pub(crate) struct BatchSlot {
    pub(crate) index: usize,
    pub(crate) arrivals: mpsc::UnboundedSender<Arrival>,
}

impl std::fmt::Debug for BatchSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSlot")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

/// The batch runner of handler `H`: downcasts, calls, splits on failure.
pub(crate) fn batch_endpoint<M, H>(handler: H) -> Arc<BatchEndpoint>
where
    M: Message,
    H: BatchHandler<M>,
{
    let handler = Arc::new(handler);
    Arc::new(move |items: Vec<(AnyMessage, MessageContext)>| {
        let handler = handler.clone();
        Box::pin(async move {
            let total = items.len();
            let mut batch = Vec::with_capacity(total);
            for (message, context) in items {
                match message.downcast::<M>() {
                    Ok(message) => batch.push((*message, context)),
                    // Only this module builds the items, from `M`.
                    Err(_) => {
                        return vec_of(total, || {
                            HandlerError::permanent(format!(
                                "batch of {} received a message of another type",
                                M::NAME
                            ))
                        })
                    }
                }
            }
            run_batch(handler.as_ref(), &batch).await
        })
    })
}

/// Runs `batch` through `handler`; on a whole failure other than an
/// infrastructure one, runs each message again alone.
async fn run_batch<M: Message, H: BatchHandler<M>>(
    handler: &H,
    batch: &[(M, MessageContext)],
) -> Vec<Result<(), HandlerError>> {
    let size = batch.len();
    let whole = match call(handler, batch).await {
        Ok(outcomes) if outcomes.len() == size => return outcomes,
        Ok(outcomes) => HandlerError::permanent(format!(
            "batch handler of {} returned {} outcomes for {size} messages",
            M::NAME,
            outcomes.len()
        )),
        Err(error) => error,
    };
    if size == 1 {
        return vec![Err(whole)];
    }
    if whole.kind() == FailureKind::Infrastructure {
        // Not the messages' fault: keep them all, attempts not counted.
        let reason = whole.to_string();
        return vec_of(size, || HandlerError::infrastructure(reason.clone()));
    }
    tracing::warn!(
        message_type = M::NAME,
        size,
        error = %whole,
        "batch failed as a whole; running its messages one at a time"
    );
    let mut results = Vec::with_capacity(size);
    for item in batch {
        let single = std::slice::from_ref(item);
        results.push(match call(handler, single).await {
            Ok(mut outcomes) if outcomes.len() == 1 => outcomes.remove(0),
            Ok(outcomes) => Err(HandlerError::permanent(format!(
                "batch handler of {} returned {} outcomes for 1 message",
                M::NAME,
                outcomes.len()
            ))),
            Err(error) => Err(error),
        });
    }
    results
}

/// One call of the handler, a panic turned into [`HandlerError::Panicked`].
async fn call<M: Message, H: BatchHandler<M>>(
    handler: &H,
    batch: &[(M, MessageContext)],
) -> BatchOutcome {
    AssertUnwindSafe(handler.handle_batch(batch))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            Err(HandlerError::Panicked {
                message: panic_message(panic.as_ref()),
            })
        })
}

fn vec_of(size: usize, error: impl Fn() -> HandlerError) -> Vec<Result<(), HandlerError>> {
    (0..size).map(|_| Err(error())).collect()
}

/// The end of a batch handler's chain for one message: joins the batch the
/// context belongs to, or, outside a batch, runs the message as a batch of
/// one.
pub(crate) async fn join(
    endpoint: Arc<BatchEndpoint>,
    message: AnyMessage,
    mut context: MessageContext,
) -> Result<(), HandlerError> {
    let Some(slot) = context.take_batch_slot() else {
        let mut results = endpoint(vec![(message, context)]).await;
        return results
            .pop()
            .unwrap_or_else(|| Err(HandlerError::permanent("batch of one ran no message")));
    };
    let (reply, result) = oneshot::channel();
    let arrival = Arrival {
        index: slot.index,
        message,
        context,
        reply,
    };
    if slot.arrivals.send(arrival).is_err() {
        return Err(HandlerError::retryable(
            "the batch this message belonged to was abandoned",
        ));
    }
    result.await.unwrap_or_else(|_| {
        Err(HandlerError::retryable(
            "the batch this message belonged to was abandoned",
        ))
    })
}

/// Runs the messages that arrived together as one batch and answers each.
pub(crate) async fn run_arrivals(endpoint: Arc<BatchEndpoint>, arrivals: Vec<Arrival>) {
    let mut replies = Vec::with_capacity(arrivals.len());
    let mut items = Vec::with_capacity(arrivals.len());
    for arrival in arrivals {
        replies.push(arrival.reply);
        items.push((arrival.message, arrival.context));
    }
    let results = endpoint(items).await;
    for (reply, result) in replies.into_iter().zip(results) {
        // A chain that stopped waiting (a middleware's timeout) drops it.
        let _ = reply.send(result);
    }
}
