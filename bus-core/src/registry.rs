//! Registration of command and event handlers, checked once at build time,
//! and the one way every transport invokes them.

use std::{
    collections::{BTreeMap, HashMap},
    panic::AssertUnwindSafe,
    sync::Arc,
};

use futures::FutureExt;
use tracing::Instrument;

use crate::{
    batch::{BatchConfig, BatchEndpoint, BatchHandler},
    middleware::{Endpoint, Next},
    settlement::{decide, panic_message, Settlement},
    Command, CommandHandler, Envelope, Event, EventHandler, HandlerError, Message, MessageContext,
    Middleware, Receipt, RegistrationError, RetryPolicy,
};

/// Called after a handler succeeded, with the envelope it handled.
type SuccessHook = dyn Fn(&Envelope) + Send + Sync;

/// Turns a payload of version N into one of version N + 1.
type UpcastFn = dyn Fn(serde_json::Value) -> serde_json::Value + Send + Sync;

/// The upcasters of one message type, by the version they read.
type Upcasters = BTreeMap<u32, Arc<UpcastFn>>;

/// A handler with its message type erased: what transports invoke.
///
/// [`RegisteredHandler::invoke`] is the shared invocation: it opens the
/// message's span, catches panics, runs the middleware chain, brings an older
/// payload up to date with the registered upcasters, decodes it and runs the
/// typed handler.
#[derive(Clone)]
pub struct RegisteredHandler {
    message_type: &'static str,
    subscriber: Option<String>,
    /// Decodes and runs the typed handler; once built, preceded by the
    /// version check and the upcasters.
    endpoint: Arc<Endpoint>,
    version: u32,
    middleware: Arc<[Arc<dyn Middleware>]>,
    on_success: Option<Arc<SuccessHook>>,
    /// Set for a [`BatchHandler`](crate::BatchHandler): how transports
    /// collect its batches, and the typed batch runner the endpoint joins.
    pub(crate) batch: Option<(BatchConfig, Arc<BatchEndpoint>)>,
}

impl std::fmt::Debug for RegisteredHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredHandler")
            .field("message_type", &self.message_type)
            .field("version", &self.version)
            .field("subscriber", &self.subscriber)
            .field("middleware", &self.middleware.len())
            .field("batch", &self.batch.as_ref().map(|(config, _)| config))
            .finish_non_exhaustive()
    }
}

impl RegisteredHandler {
    fn new<M: Message>(subscriber: Option<String>, endpoint: Arc<Endpoint>) -> Self {
        Self {
            message_type: M::NAME,
            subscriber,
            endpoint,
            version: M::VERSION,
            middleware: Arc::new([]),
            on_success: None,
            batch: None,
        }
    }

    /// Subscriber name, for an event handler; `None` for a command handler.
    pub fn subscriber(&self) -> Option<&str> {
        self.subscriber.as_deref()
    }

    /// Wire name of the message this handler takes.
    pub fn message_type(&self) -> &'static str {
        self.message_type
    }

    /// Runs the handler on `envelope`, as delivery `attempt` of
    /// `max_attempts`, inside a `handle` span; a panic is returned as
    /// [`HandlerError::Panicked`]. Pass the result to
    /// [`decide`](crate::transport::decide).
    ///
    /// The span carries the envelope's `trace_id`, the handling's own
    /// `span_id` and the envelope's span as `parent_span_id` (see
    /// [`MessageContext::trace`]), so every line logged inside the handler
    /// (its SQL errors included) names the trace of the request that sent
    /// the message.
    pub async fn invoke(
        &self,
        envelope: Arc<Envelope>,
        attempt: u32,
        max_attempts: u32,
    ) -> Result<(), HandlerError> {
        self.invoke_receipted(envelope, attempt, max_attempts, None)
            .await
    }

    /// [`invoke`](Self::invoke) for a delivery whose context carries
    /// `receipt` (the durable bus's row).
    pub(crate) async fn invoke_receipted(
        &self,
        envelope: Arc<Envelope>,
        attempt: u32,
        max_attempts: u32,
        receipt: Option<Receipt>,
    ) -> Result<(), HandlerError> {
        let context = MessageContext::new(envelope, attempt, max_attempts).with_receipt(receipt);
        self.run_chain(context).await
    }

    /// The shared invocation of one message's chain: its `handle` span,
    /// panic catching, middleware, upcasting, decoding, the handler (or, in
    /// a batch, the batch the context belongs to), the success hook.
    pub(crate) async fn run_chain(&self, context: MessageContext) -> Result<(), HandlerError> {
        let envelope = context.envelope_arc();
        let trace = context.trace();
        let span = tracing::info_span!(
            "handle",
            message_id = %envelope.id,
            message_type = %envelope.message_type,
            attempt = context.attempt(),
            subscriber = self.subscriber.as_deref().unwrap_or("-"),
            trace_id = %trace.trace_id_hex(),
            span_id = %trace.span_id_hex(),
            parent_span_id = envelope
                .trace_context()
                .map(|parent| tracing::field::display(parent.span_id_hex())),
            trace_flags = %trace.flags_hex(),
        );
        let chain = Next::new(&self.middleware, &*self.endpoint).run(context);
        let result = AssertUnwindSafe(chain)
            .catch_unwind()
            .instrument(span.clone())
            .await
            .unwrap_or_else(|panic| {
                Err(HandlerError::Panicked {
                    message: panic_message(panic.as_ref()),
                })
            });
        span.in_scope(|| match &result {
            Ok(()) => {
                tracing::debug!("message handled");
                if let Some(hook) = &self.on_success {
                    hook(&envelope);
                }
            }
            Err(error) => tracing::debug!(%error, "handler failed"),
        });
        result
    }

    /// Runs the handler on `envelope` as delivery `attempt` ([`invoke`]),
    /// settles the result under `policy` ([`decide`]) and records the
    /// delivery's [`metrics`](crate::metrics): what every bus does with a
    /// delivery before applying the settlement in its own terms.
    ///
    /// [`invoke`]: Self::invoke
    pub async fn invoke_and_decide(
        &self,
        envelope: Arc<Envelope>,
        attempt: u32,
        policy: &RetryPolicy,
    ) -> (Result<(), HandlerError>, Settlement) {
        self.invoke_and_decide_receipted(envelope, attempt, policy, None)
            .await
    }

    /// [`invoke_and_decide`](Self::invoke_and_decide) for a delivery whose
    /// context carries `receipt` (the durable bus's row).
    pub(crate) async fn invoke_and_decide_receipted(
        &self,
        envelope: Arc<Envelope>,
        attempt: u32,
        policy: &RetryPolicy,
        receipt: Option<Receipt>,
    ) -> (Result<(), HandlerError>, Settlement) {
        let started = std::time::Instant::now();
        let created = envelope.timestamp;
        let result = self
            .invoke_receipted(envelope, attempt, policy.max_attempts.max(1), receipt)
            .await;
        let settlement = decide(&result, attempt, policy);
        crate::metrics::record_settled(
            self.message_type,
            self.subscriber.as_deref(),
            &result,
            &settlement,
            started.elapsed(),
            created,
        );
        (result, settlement)
    }

    /// Puts the version check (and upcasting) in front of the endpoint and
    /// the middleware around it: done once, at build time.
    fn finish(
        mut self,
        upcasters: Option<&Upcasters>,
        middleware: &Arc<[Arc<dyn Middleware>]>,
    ) -> Self {
        let typed = self.endpoint.clone();
        let upcasters = Arc::new(upcasters.cloned().unwrap_or_default());
        let current = self.version;
        self.endpoint =
            Arc::new(
                move |context: MessageContext| match upcast(context, current, &upcasters) {
                    Ok(context) => typed(context),
                    Err(error) => Box::pin(std::future::ready(Err(error))),
                },
            );
        self.middleware = middleware.clone();
        self
    }
}

/// Brings the context's payload to version `current`, one upcaster at a time.
fn upcast(
    context: MessageContext,
    current: u32,
    upcasters: &Upcasters,
) -> Result<MessageContext, HandlerError> {
    let envelope = context.envelope();
    let version = envelope.version;
    if version == current {
        return Ok(context);
    }
    let unsupported = |reason: String| HandlerError::UnsupportedVersion {
        message_type: envelope.message_type.clone(),
        version,
        reason,
    };
    if version > current {
        return Err(unsupported(format!(
            "this consumer reads versions up to {current}"
        )));
    }
    let decode_error = |source| HandlerError::Decode {
        message_type: envelope.message_type.clone(),
        source,
    };
    let mut payload: serde_json::Value =
        serde_json::from_str(envelope.payload.get()).map_err(decode_error)?;
    for from in version..current {
        let Some(upcaster) = upcasters.get(&from) else {
            return Err(unsupported(format!(
                "no upcaster from version {from} to {}",
                from + 1
            )));
        };
        payload = upcaster(payload);
    }
    let mut upgraded = envelope.clone();
    upgraded.payload = serde_json::value::to_raw_value(&payload).map_err(decode_error)?;
    upgraded.version = current;
    // The same context (attempt, trace, batch) for the upgraded envelope.
    Ok(context.with_envelope(Arc::new(upgraded)))
}

/// One named subscriber of one event type.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Wire name of the event.
    pub event_type: &'static str,
    /// Subscriber name, unique per event; transports name queues after it.
    pub subscriber: String,
    /// The handler.
    pub handler: RegisteredHandler,
}

/// Collects handlers, upcasters and middleware; [`HandlersBuilder::build`]
/// checks the set is coherent.
#[derive(Default)]
pub struct HandlersBuilder {
    commands: Vec<RegisteredHandler>,
    subscriptions: Vec<Subscription>,
    upcasters: HashMap<&'static str, Upcasters>,
    duplicate_upcaster: Option<(&'static str, u32)>,
    middleware: Vec<Arc<dyn Middleware>>,
    on_success: Option<Arc<SuccessHook>>,
}

impl std::fmt::Debug for HandlersBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlersBuilder")
            .field("commands", &self.commands)
            .field("subscriptions", &self.subscriptions)
            .field("middleware", &self.middleware.len())
            .finish_non_exhaustive()
    }
}

impl HandlersBuilder {
    /// Registers the handler of command `C`.
    pub fn command<C, H>(mut self, handler: H) -> Self
    where
        C: Command,
        H: CommandHandler<C>,
    {
        let handler = Arc::new(handler);
        let endpoint: Arc<Endpoint> = Arc::new(move |context: MessageContext| {
            let handler = handler.clone();
            Box::pin(async move {
                let command = decode::<C>(context.envelope())?;
                handler.handle(command, context).await
            })
        });
        self.commands
            .push(RegisteredHandler::new::<C>(None, endpoint));
        self
    }

    /// Subscribes `handler`, named `subscriber`, to event `E`.
    pub fn subscribe<E, H>(mut self, subscriber: impl Into<String>, handler: H) -> Self
    where
        E: Event,
        H: EventHandler<E>,
    {
        let subscriber = subscriber.into();
        let handler = Arc::new(handler);
        let endpoint: Arc<Endpoint> = Arc::new(move |context: MessageContext| {
            let handler = handler.clone();
            Box::pin(async move {
                let event = decode::<E>(context.envelope())?;
                handler.handle(event, context).await
            })
        });
        self.subscriptions.push(Subscription {
            event_type: E::NAME,
            subscriber: subscriber.clone(),
            handler: RegisteredHandler::new::<E>(Some(subscriber), endpoint),
        });
        self
    }

    /// Registers `handler` as the handler of command `C`, taking batches of
    /// up to `config.max_messages` (see [`BatchHandler`]). It counts as the
    /// command's one handler: [`build`](Self::build) refuses another.
    pub fn command_batch<C, H>(mut self, handler: H, config: BatchConfig) -> Self
    where
        C: Command,
        H: BatchHandler<C>,
    {
        let batch = crate::batch::batch_endpoint::<C, H>(handler);
        let mut registered = RegisteredHandler::new::<C>(None, batch_member::<C>(&batch));
        registered.batch = Some((config, batch));
        self.commands.push(registered);
        self
    }

    /// Subscribes `handler`, named `subscriber`, to event `E`, taking
    /// batches of up to `config.max_messages` (see [`BatchHandler`]).
    pub fn subscribe_batch<E, H>(
        mut self,
        subscriber: impl Into<String>,
        handler: H,
        config: BatchConfig,
    ) -> Self
    where
        E: Event,
        H: BatchHandler<E>,
    {
        let subscriber = subscriber.into();
        let batch = crate::batch::batch_endpoint::<E, H>(handler);
        let mut registered =
            RegisteredHandler::new::<E>(Some(subscriber.clone()), batch_member::<E>(&batch));
        registered.batch = Some((config, batch));
        self.subscriptions.push(Subscription {
            event_type: E::NAME,
            subscriber,
            handler: registered,
        });
        self
    }

    /// Reads payloads of message `M` at version `from_version` as version
    /// `from_version + 1`, so that messages written by an older producer
    /// (or waiting in a queue since before a deploy) are still handled.
    ///
    /// Chain upcasters to cover several versions. A message older than the
    /// oldest upcaster, or newer than [`Message::VERSION`], is dead-lettered
    /// as [`HandlerError::UnsupportedVersion`].
    pub fn upcast<M: Message>(
        mut self,
        from_version: u32,
        upcaster: impl Fn(serde_json::Value) -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        let known = self.upcasters.entry(M::NAME).or_default();
        if known.insert(from_version, Arc::new(upcaster)).is_some() {
            self.duplicate_upcaster
                .get_or_insert((M::NAME, from_version));
        }
        self
    }

    /// Wraps every handler of this set (commands and subscribers) in
    /// `middleware`. The first registered runs outermost; see
    /// [`Middleware`] for the whole order.
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// Runs `hook` after every successful command handler (not subscribers),
    /// e.g. to wake an outbox relay right after the handler's commit.
    pub fn on_command_success(mut self, hook: impl Fn(&Envelope) + Send + Sync + 'static) -> Self {
        self.on_success = Some(Arc::new(hook));
        self
    }

    /// Checks the registrations: one handler per command, unique valid
    /// subscriber names per event, one upcaster per message and version.
    pub fn build(self) -> Result<Handlers, RegistrationError> {
        if let Some((message_type, from_version)) = self.duplicate_upcaster {
            return Err(RegistrationError::DuplicateUpcaster {
                message_type: message_type.to_owned(),
                from_version,
            });
        }
        let middleware: Arc<[Arc<dyn Middleware>]> = self.middleware.into();
        let mut commands = HashMap::new();
        for handler in self.commands {
            let message_type = handler.message_type;
            let mut handler = handler.finish(self.upcasters.get(message_type), &middleware);
            handler.on_success = self.on_success.clone();
            if commands.insert(message_type, handler).is_some() {
                return Err(RegistrationError::DuplicateCommandHandler {
                    message_type: message_type.to_owned(),
                });
            }
        }
        let mut events: HashMap<&'static str, Vec<Subscription>> = HashMap::new();
        for mut subscription in self.subscriptions {
            let name = &subscription.subscriber;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(RegistrationError::InvalidSubscriberName(name.clone()));
            }
            let existing = events.entry(subscription.event_type).or_default();
            if existing
                .iter()
                .any(|s| s.subscriber == subscription.subscriber)
            {
                return Err(RegistrationError::DuplicateSubscriber {
                    message_type: subscription.event_type.to_owned(),
                    subscriber: subscription.subscriber,
                });
            }
            subscription.handler = subscription
                .handler
                .finish(self.upcasters.get(subscription.event_type), &middleware);
            existing.push(subscription);
        }
        Ok(Handlers {
            inner: Arc::new(Inner { commands, events }),
        })
    }
}

/// The end of a batch handler's per-message chain: decode, then join the
/// message's batch (or run it as a batch of one).
fn batch_member<M: Message>(batch: &Arc<BatchEndpoint>) -> Arc<Endpoint> {
    let batch = batch.clone();
    Arc::new(move |context: MessageContext| {
        let batch = batch.clone();
        Box::pin(async move {
            let message = decode::<M>(context.envelope())?;
            crate::batch::join(batch, Box::new(message), context).await
        })
    })
}

fn decode<M: Message>(envelope: &Envelope) -> Result<M, HandlerError> {
    envelope
        .decode::<M>()
        .map_err(|source| HandlerError::Decode {
            message_type: envelope.message_type.clone(),
            source,
        })
}

struct Inner {
    commands: HashMap<&'static str, RegisteredHandler>,
    events: HashMap<&'static str, Vec<Subscription>>,
}

/// An immutable, cheaply cloneable set of handlers that buses are built from.
#[derive(Clone)]
pub struct Handlers {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Handlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handlers")
            .field("commands", &self.inner.commands.keys().collect::<Vec<_>>())
            .field("events", &self.inner.events.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Handlers {
    /// Starts a registration.
    pub fn builder() -> HandlersBuilder {
        HandlersBuilder::default()
    }

    /// The handler of the command named `message_type`, if any.
    pub fn command(&self, message_type: &str) -> Option<&RegisteredHandler> {
        self.inner.commands.get(message_type)
    }

    /// The subscribers of the event named `message_type` (possibly none).
    pub fn subscribers(&self, message_type: &str) -> &[Subscription] {
        self.inner
            .events
            .get(message_type)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Every command that has a handler, sorted by name.
    pub fn commands(&self) -> Vec<&RegisteredHandler> {
        let mut all: Vec<_> = self.inner.commands.values().collect();
        all.sort_by_key(|h| h.message_type);
        all
    }

    /// Every subscription, sorted by event then subscriber name.
    pub fn subscriptions(&self) -> Vec<&Subscription> {
        let mut all: Vec<_> = self.inner.events.values().flatten().collect();
        all.sort_by(|a, b| (a.event_type, &a.subscriber).cmp(&(b.event_type, &b.subscriber)));
        all
    }
}
