//! Behaviour wrapped around every handler, on every bus.
//!
//! A [`Middleware`] receives the message's [`MessageContext`] and the
//! [`Next`] step of the chain, and decides whether and how to call it:
//! measure it, time it out, refuse it while a circuit is open. Middleware is
//! registered once on the [`HandlersBuilder`](crate::HandlersBuilder), so
//! every transport that runs those handlers runs it too.
//!
//! The order the layers run in is documented on [`Middleware`].

use std::sync::Arc;

use crate::{bus::BoxFuture, HandlerError, MessageContext};

/// The erased innermost step: upcast, decode, run the typed handler.
pub(crate) type Endpoint =
    dyn Fn(MessageContext) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync;

/// Wraps the handling of every message.
///
/// Order, outermost first:
///
/// 1. the `handle` tracing span (message id, type, attempt, subscriber);
/// 2. panic catching: a panic anywhere below becomes
///    [`HandlerError::Panicked`];
/// 3. the registered middleware, in registration order (the first one
///    registered sees the message first and the result last);
/// 4. version check and upcasting, then payload decoding;
/// 5. the handler.
///
/// The result then goes to [`decide`](crate::transport::decide).
///
/// ```
/// use bus_core::{BoxFuture, HandlerError, MessageContext, Middleware, Next};
///
/// /// Logs how long each handler took.
/// struct Timing;
///
/// impl Middleware for Timing {
///     fn handle<'a>(
///         &'a self,
///         context: MessageContext,
///         next: Next<'a>,
///     ) -> BoxFuture<'a, Result<(), HandlerError>> {
///         Box::pin(async move {
///             let started = std::time::Instant::now();
///             let result = next.run(context).await;
///             tracing::info!(elapsed = ?started.elapsed(), ok = result.is_ok(), "handled");
///             result
///         })
///     }
/// }
/// ```
pub trait Middleware: Send + Sync + 'static {
    /// Handles one delivery, usually by calling `next.run(context)`.
    fn handle<'a>(
        &'a self,
        context: MessageContext,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;
}

/// The rest of the chain after a [`Middleware`]: the following middleware,
/// then the handler.
pub struct Next<'a> {
    rest: &'a [Arc<dyn Middleware>],
    endpoint: &'a Endpoint,
}

impl std::fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next")
            .field("middleware_left", &self.rest.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Next<'a> {
    pub(crate) fn new(chain: &'a [Arc<dyn Middleware>], endpoint: &'a Endpoint) -> Self {
        Self {
            rest: chain,
            endpoint,
        }
    }

    /// Runs the rest of the chain on `context`.
    pub fn run(self, context: MessageContext) -> BoxFuture<'a, Result<(), HandlerError>> {
        match self.rest.split_first() {
            Some((first, rest)) => first.handle(
                context,
                Next {
                    rest,
                    endpoint: self.endpoint,
                },
            ),
            None => (self.endpoint)(context),
        }
    }
}
