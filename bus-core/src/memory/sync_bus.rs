use std::{panic::AssertUnwindSafe, sync::Arc};

use futures::FutureExt;

use crate::{
    bus::BoxFuture, dead_letter::dead_letter, CommandBus, DeadLetterSink, DispatchError, Envelope,
    EventBus, HandlerError, Handlers, InMemoryDeadLetters,
};

/// Runs handlers inline: `dispatch` returns once the handler has run, with
/// its result ([`DispatchError::Handler`] on failure). Nothing is retried;
/// the caller sees the failure.
///
/// `publish` runs every subscriber in turn; a failing subscriber is
/// dead-lettered (logged and kept) and does not stop the others.
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
    fn dispatch(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
        Box::pin(async move {
            let handler = self
                .handlers
                .command(&envelope.message_type)
                .ok_or_else(|| DispatchError::NoHandler {
                    message_type: envelope.message_type.clone(),
                })?;
            handler.invoke(Arc::new(envelope), 1, 1).await?;
            Ok(())
        })
    }
}

impl EventBus for InMemoryBus {
    fn publish(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
        Box::pin(async move {
            let envelope = Arc::new(envelope);
            for subscription in self.handlers.subscribers(&envelope.message_type) {
                // A panicking subscriber must not keep the others from running.
                let call = subscription.handler.invoke(envelope.clone(), 1, 1);
                let result = AssertUnwindSafe(call)
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err(HandlerError::permanent("subscriber panicked")));
                if let Err(error) = result {
                    dead_letter(
                        self.dead_letters.as_ref(),
                        &envelope,
                        Some(&subscription.subscriber),
                        &error,
                        1,
                    );
                }
            }
            Ok(())
        })
    }
}
