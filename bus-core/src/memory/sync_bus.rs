use std::sync::Arc;

use crate::{
    bus::BoxFuture,
    dead_letter::dead_letter,
    settlement::{settle_span, Settlement},
    CommandBus, DeadLetterSink, DispatchError, Envelope, EventBus, Handlers, InMemoryDeadLetters,
    RetryPolicy,
};

/// One attempt: a caller waiting on its command cannot wait for retries.
const SINGLE_ATTEMPT: RetryPolicy = RetryPolicy {
    max_attempts: 1,
    initial_backoff: std::time::Duration::ZERO,
    multiplier: 1.0,
    max_backoff: std::time::Duration::ZERO,
};

/// Runs handlers inline: `dispatch` returns once the handler has run, with
/// its result ([`DispatchError::Handler`] on failure). The shared
/// settlement runs with a single attempt, so nothing is retried: where it
/// says "dead-letter", a command's failure (a panic included, as
/// [`HandlerError::Panicked`](crate::HandlerError::Panicked)) goes back to
/// the caller, who is there to see it.
///
/// `publish` runs every subscriber in turn; a failing (or panicking)
/// subscriber is dead-lettered (logged and kept) and does not stop the
/// others. A subscriber failing on infrastructure makes `publish` answer
/// [`DispatchError::Unavailable`] once all have run, so the publisher keeps
/// the event and offers it again (the others see it twice: at-least-once).
///
/// Good for tests and single-process tools where read-your-writes matters
/// more than throughput.
#[derive(Clone)]
pub struct InMemoryBus {
    handlers: Handlers,
    dead_letters: Arc<dyn DeadLetterSink>,
}

impl std::fmt::Debug for InMemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryBus")
            .field("handlers", &self.handlers)
            .finish_non_exhaustive()
    }
}

impl InMemoryBus {
    /// A bus over `handlers` that keeps dead letters in memory.
    pub fn new(handlers: Handlers) -> Self {
        Self::with_dead_letters(handlers, Arc::new(InMemoryDeadLetters::default()))
    }

    /// A bus over `handlers` that hands dead letters to `dead_letters`.
    pub fn with_dead_letters(handlers: Handlers, dead_letters: Arc<dyn DeadLetterSink>) -> Self {
        Self {
            handlers,
            dead_letters,
        }
    }
}

impl CommandBus for InMemoryBus {
    fn send_envelope(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
        Box::pin(async move {
            let handler = self
                .handlers
                .command(&envelope.message_type)
                .ok_or_else(|| DispatchError::NoHandler {
                    message_type: envelope.message_type.clone(),
                })?;
            let (result, settlement) = handler
                .invoke_and_decide(Arc::new(envelope), 1, &SINGLE_ATTEMPT)
                .await;
            match settlement {
                Settlement::Ack => Ok(()),
                _ => result.map_err(DispatchError::Handler),
            }
        })
    }
}

impl EventBus for InMemoryBus {
    fn publish_envelope(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
        Box::pin(async move {
            let envelope = Arc::new(envelope);
            let mut suspended = None;
            for subscription in self.handlers.subscribers(&envelope.message_type) {
                // `invoke` catches panics: one subscriber cannot keep the
                // others from running.
                let (_, settlement) = subscription
                    .handler
                    .invoke_and_decide(envelope.clone(), 1, &SINGLE_ATTEMPT)
                    .await;
                match settlement {
                    Settlement::DeadLetter { reason } => settle_span(&envelope).in_scope(|| {
                        dead_letter(
                            self.dead_letters.as_ref(),
                            &envelope,
                            Some(&subscription.subscriber),
                            &reason,
                            1,
                        )
                    }),
                    // No one here to keep it: the publisher (the outbox
                    // relay) keeps the event and publishes it again later.
                    Settlement::Suspend { reason } => suspended = Some(reason),
                    _ => {}
                }
            }
            match suspended {
                Some(reason) => Err(DispatchError::Unavailable {
                    reason,
                    source: None,
                }),
                None => Ok(()),
            }
        })
    }
}
