//! Test helpers: a bus that records what it is given, and a
//! given/when/then harness for command handlers.
//!
//! [`RecordingBus`] stands in for a bus in tests of code that sends commands
//! or publishes events:
//!
//! ```
//! # use bus_core::{testing::RecordingBus, Command, CommandBusExt, Message};
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Ping { n: u32 }
//! impl Message for Ping { const NAME: &'static str = "example.Ping"; }
//! impl Command for Ping {}
//!
//! # tokio_test(async {
//! let bus = RecordingBus::default();
//! bus.send(&Ping { n: 7 }).await.unwrap();
//! assert_eq!(bus.dispatched_of::<Ping>(), vec![Ping { n: 7 }]);
//! # });
//! # fn tokio_test(f: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```
//!
//! [`TestFramework`] tests one command handler by its behaviour: given the
//! events that already happened, when a command is handled, then these
//! events were published (or the handler failed so). The handler is built
//! around the framework's [`RecordingBus`], and runs through the same
//! invocation as on every bus (middleware, panic catching, decoding):
//!
//! ```
//! use bus_core::{
//!     testing::{RecordingBus, TestFramework},
//!     Command, CommandHandler, Event, EventBus, HandlerError, Message, MessageContext,
//! };
//! # use serde::{Deserialize, Serialize};
//! #[derive(Serialize, Deserialize)]
//! struct Reserve { sku: String }
//! impl Message for Reserve { const NAME: &'static str = "shop.Reserve"; }
//! impl Command for Reserve {}
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct Restocked { sku: String }
//! impl Message for Restocked { const NAME: &'static str = "shop.Restocked"; }
//! impl Event for Restocked {}
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct Reserved { sku: String }
//! impl Message for Reserved { const NAME: &'static str = "shop.Reserved"; }
//! impl Event for Reserved {}
//!
//! /// Reserves an item that was restocked and not reserved since.
//! struct ReserveHandler { events: RecordingBus }
//!
//! impl CommandHandler<Reserve> for ReserveHandler {
//!     async fn handle(&self, command: Reserve, context: MessageContext) -> Result<(), HandlerError> {
//!         let restocked = self.events.published_of::<Restocked>().iter().filter(|e| e.sku == command.sku).count();
//!         let reserved = self.events.published_of::<Reserved>().iter().filter(|e| e.sku == command.sku).count();
//!         if reserved >= restocked {
//!             return Err(HandlerError::retryable(format!("{} is out of stock", command.sku)));
//!         }
//!         let event = context.event_envelope(&Reserved { sku: command.sku }).map_err(|e| HandlerError::permanent(e.to_string()))?;
//!         self.events.publish_envelope(event).await.map_err(|e| HandlerError::retryable(e.to_string()))
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! TestFramework::new(|events| ReserveHandler { events })
//!     .given([Restocked { sku: "tea".into() }])
//!     .when(Reserve { sku: "tea".into() })
//!     .await
//!     .then_expect_published([Reserved { sku: "tea".into() }]);
//!
//! TestFramework::new(|events| ReserveHandler { events })
//!     .when(Reserve { sku: "tea".into() })
//!     .await
//!     .then_expect_error_message("tea is out of stock");
//! # });
//! ```

use std::{
    fmt::Debug,
    marker::PhantomData,
    sync::{Arc, Mutex},
};

use crate::{
    bus::BoxFuture, Command, CommandBus, CommandHandler, DispatchError, Envelope, Event, EventBus,
    HandlerError, Handlers, Message,
};

/// A bus that records what it is given and handles nothing: assert on what
/// your code sent and published without running handlers.
#[derive(Debug, Clone, Default)]
pub struct RecordingBus {
    commands: Arc<Mutex<Vec<Envelope>>>,
    events: Arc<Mutex<Vec<Envelope>>>,
}

impl RecordingBus {
    /// Every command envelope sent so far.
    pub fn dispatched(&self) -> Vec<Envelope> {
        lock(&self.commands).clone()
    }

    /// Every event envelope published so far.
    pub fn published(&self) -> Vec<Envelope> {
        lock(&self.events).clone()
    }

    /// The sent commands of type `M`, decoded.
    pub fn dispatched_of<M: Message>(&self) -> Vec<M> {
        decode_all(&lock(&self.commands))
    }

    /// The published events of type `M`, decoded.
    pub fn published_of<M: Message>(&self) -> Vec<M> {
        decode_all(&lock(&self.events))
    }
}

fn lock(records: &Mutex<Vec<Envelope>>) -> std::sync::MutexGuard<'_, Vec<Envelope>> {
    records
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn decode_all<M: Message>(envelopes: &[Envelope]) -> Vec<M> {
    envelopes
        .iter()
        .filter(|envelope| envelope.message_type == M::NAME)
        .filter_map(|envelope| envelope.decode().ok())
        .collect()
}

impl CommandBus for RecordingBus {
    fn send_envelope(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
        lock(&self.commands).push(envelope);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl EventBus for RecordingBus {
    fn publish_envelope(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
        lock(&self.events).push(envelope);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Given/when/then for one command handler; see the [module docs](self).
///
/// `given` events are recorded on the framework's [`RecordingBus`] as the
/// history the handler may read; `when` runs the command through the shared
/// invocation (attempt 1 of 1); the returned [`Then`] sees only what the
/// handler sent and published.
#[derive(Debug)]
pub struct TestFramework<C, H> {
    bus: RecordingBus,
    handler: H,
    _command: PhantomData<fn(C)>,
}

impl<C: Command, H: CommandHandler<C>> TestFramework<C, H> {
    /// A harness for the handler `build` makes around the recording bus
    /// (the bus it publishes events and sends commands on). Set up any other
    /// state the handler needs in `build`.
    pub fn new(build: impl FnOnce(RecordingBus) -> H) -> Self {
        let bus = RecordingBus::default();
        Self {
            handler: build(bus.clone()),
            bus,
            _command: PhantomData,
        }
    }

    /// Records `events` as already published, before the command.
    pub fn given<E: Event>(self, events: impl IntoIterator<Item = E>) -> Self {
        for event in events {
            match Envelope::new(&event) {
                Ok(envelope) => lock(&self.bus.events).push(envelope),
                // A test's own event that cannot be encoded is a broken test.
                Err(error) => panic!("given event cannot be encoded: {error}"),
            }
        }
        self
    }

    /// Handles `command`, as a bus would on its first attempt.
    pub async fn when(self, command: C) -> Then {
        let published_before = lock(&self.bus.events).len();
        let sent_before = lock(&self.bus.commands).len();
        let result = match Envelope::new(&command) {
            Ok(envelope) => {
                let handlers = Handlers::builder().command(self.handler).build();
                match handlers.as_ref().ok().and_then(|h| h.command(C::NAME)) {
                    Some(handler) => handler.invoke(Arc::new(envelope), 1, 1).await,
                    None => Err(HandlerError::UnknownType {
                        message_type: C::NAME.to_owned(),
                    }),
                }
            }
            Err(error) => Err(HandlerError::permanent(error.to_string())),
        };
        Then {
            published: lock(&self.bus.events)[published_before..].to_vec(),
            sent: lock(&self.bus.commands)[sent_before..].to_vec(),
            result,
        }
    }
}

/// What a handler did in [`TestFramework::when`]: its result, and what it
/// published and sent.
#[derive(Debug)]
pub struct Then {
    published: Vec<Envelope>,
    sent: Vec<Envelope>,
    result: Result<(), HandlerError>,
}

impl Then {
    /// The handler's result.
    pub fn result(&self) -> &Result<(), HandlerError> {
        &self.result
    }

    /// The events of type `E` the handler published, decoded, in order.
    pub fn then_published<E: Event>(&self) -> Vec<E> {
        decode_all(&self.published)
    }

    /// The commands of type `M` the handler sent, decoded, in order.
    pub fn then_sent<M: Command>(&self) -> Vec<M> {
        decode_all(&self.sent)
    }

    /// Every envelope the handler published, whatever its type.
    pub fn published_envelopes(&self) -> &[Envelope] {
        &self.published
    }

    /// Asserts the handler succeeded and published exactly `expected`
    /// (events of other types included: none may be there).
    #[track_caller]
    pub fn then_expect_published<E: Event + PartialEq + Debug>(
        self,
        expected: impl IntoIterator<Item = E>,
    ) -> Self {
        if let Err(error) = &self.result {
            panic!("expected success, the handler failed: {error}");
        }
        let expected: Vec<E> = expected.into_iter().collect();
        let others: Vec<&str> = self
            .published
            .iter()
            .filter(|envelope| envelope.message_type != E::NAME)
            .map(|envelope| envelope.message_type.as_str())
            .collect();
        assert!(others.is_empty(), "unexpected events published: {others:?}");
        assert_eq!(self.then_published::<E>(), expected, "published events");
        self
    }

    /// Asserts the handler failed, published nothing, and returns its error.
    #[track_caller]
    pub fn then_expect_error(self) -> HandlerError {
        assert!(
            self.published.is_empty(),
            "a failed handler published {} event(s)",
            self.published.len()
        );
        match self.result {
            Ok(()) => panic!("expected an error, the handler succeeded"),
            Err(error) => error,
        }
    }

    /// Asserts the handler failed with `message` and published nothing.
    #[track_caller]
    pub fn then_expect_error_message(self, message: &str) -> HandlerError {
        let error = self.then_expect_error();
        assert_eq!(error.to_string(), message, "handler error");
        error
    }
}
