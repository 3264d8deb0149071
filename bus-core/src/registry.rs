//! Registration of command and event handlers, checked once at build time.

use std::{collections::HashMap, sync::Arc};

use crate::{
    bus::BoxFuture, Command, CommandHandler, Envelope, Event, EventHandler, HandlerError,
    MessageContext, RegistrationError,
};

type ErasedFn = dyn Fn(Arc<Envelope>, MessageContext) -> BoxFuture<'static, Result<(), HandlerError>>
    + Send
    + Sync;

/// Called after a handler succeeded, with the envelope it handled.
type SuccessHook = dyn Fn(&Envelope) + Send + Sync;

/// A handler with its message type erased: what transports invoke.
///
/// It decodes the payload (a payload that does not decode is a
/// [`HandlerError::Decode`], i.e. a poison message) and runs the typed handler.
#[derive(Clone)]
pub struct RegisteredHandler {
    message_type: &'static str,
    call: Arc<ErasedFn>,
    on_success: Option<Arc<SuccessHook>>,
}

impl std::fmt::Debug for RegisteredHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegisteredHandler")
            .field("message_type", &self.message_type)
            .finish_non_exhaustive()
    }
}

impl RegisteredHandler {
    /// Wire name of the message this handler takes.
    pub fn message_type(&self) -> &'static str {
        self.message_type
    }

    /// Runs the handler on `envelope`, as delivery `attempt` of `max_attempts`.
    pub async fn invoke(
        &self,
        envelope: Arc<Envelope>,
        attempt: u32,
        max_attempts: u32,
    ) -> Result<(), HandlerError> {
        let context = MessageContext::new(envelope.clone(), attempt, max_attempts);
        let result = (self.call)(envelope.clone(), context).await;
        if result.is_ok() {
            if let Some(hook) = &self.on_success {
                hook(&envelope);
            }
        }
        result
    }
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

/// Collects handlers; [`HandlersBuilder::build`] checks the set is coherent.
#[derive(Default)]
pub struct HandlersBuilder {
    commands: Vec<RegisteredHandler>,
    subscriptions: Vec<Subscription>,
    on_success: Option<Arc<SuccessHook>>,
}

impl HandlersBuilder {
    /// Registers the handler of command `C`.
    pub fn command<C, H>(mut self, handler: H) -> Self
    where
        C: Command,
        H: CommandHandler<C>,
    {
        let handler = Arc::new(handler);
        let call: Arc<ErasedFn> = Arc::new(move |envelope: Arc<Envelope>, context| {
            let handler = handler.clone();
            Box::pin(async move {
                let command = decode::<C>(&envelope)?;
                handler.handle(command, context).await
            })
        });
        self.commands.push(RegisteredHandler {
            message_type: C::NAME,
            call,
            on_success: None,
        });
        self
    }

    /// Subscribes `handler`, named `subscriber`, to event `E`.
    pub fn subscribe<E, H>(mut self, subscriber: impl Into<String>, handler: H) -> Self
    where
        E: Event,
        H: EventHandler<E>,
    {
        let handler = Arc::new(handler);
        let call: Arc<ErasedFn> = Arc::new(move |envelope: Arc<Envelope>, context| {
            let handler = handler.clone();
            Box::pin(async move {
                let event = decode::<E>(&envelope)?;
                handler.handle(event, context).await
            })
        });
        self.subscriptions.push(Subscription {
            event_type: E::NAME,
            subscriber: subscriber.into(),
            handler: RegisteredHandler {
                message_type: E::NAME,
                call,
                on_success: None,
            },
        });
        self
    }

    /// Runs `hook` after every successful command handler (not subscribers),
    /// e.g. to wake an outbox relay right after the handler's commit.
    pub fn on_command_success(mut self, hook: impl Fn(&Envelope) + Send + Sync + 'static) -> Self {
        self.on_success = Some(Arc::new(hook));
        self
    }

    /// Checks the registrations: one handler per command, unique valid
    /// subscriber names per event.
    pub fn build(self) -> Result<Handlers, RegistrationError> {
        let mut commands = HashMap::new();
        for mut handler in self.commands {
            handler.on_success = self.on_success.clone();
            let message_type = handler.message_type;
            if commands.insert(message_type, handler).is_some() {
                return Err(RegistrationError::DuplicateCommandHandler {
                    message_type: message_type.to_owned(),
                });
            }
        }
        let mut events: HashMap<&'static str, Vec<Subscription>> = HashMap::new();
        for subscription in self.subscriptions {
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
            existing.push(subscription);
        }
        Ok(Handlers {
            inner: Arc::new(Inner { commands, events }),
        })
    }
}

fn decode<M: crate::Message>(envelope: &Envelope) -> Result<M, HandlerError> {
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
