//! # bus-core: commands, queries and domain events
//!
//! An application built on this crate talks in three kinds of messages:
//!
//! - A **command** ([`Command`]) asks for a change: "create this offer". It has
//!   exactly one handler ([`CommandHandler`]). Sending it is *dispatching*; a
//!   bus accepts it and the handler applies it, now (in-memory sync bus) or
//!   later (in-memory async bus, RabbitMQ).
//! - A **domain event** ([`Event`]) says a change happened: "offer created".
//!   Any number of named subscribers ([`EventHandler`]) react to it, each on
//!   its own, each retried on its own.
//! - A **query** ([`Query`]) asks a question and waits for the answer. It is
//!   answered in-process by its one [`QueryHandler`] through the [`QueryBus`];
//!   queries never travel over a broker.
//!
//! Every command and event travels in one [`Envelope`]: message id, type name,
//! version, timestamp, headers (trace context, correlation and causation ids)
//! and a JSON payload. All transports share it, so a handler sees the same
//! bytes whichever bus runs it.
//!
//! Handlers are registered once in a [`HandlersBuilder`]; [`HandlersBuilder::build`]
//! refuses a second handler for the same command. A bus is built from the
//! resulting [`Handlers`]:
//!
//! | bus | `dispatch` returns | retries | failures end up |
//! |---|---|---|---|
//! | [`InMemoryBus`] | after the handler ran, with its result | none | returned to the caller |
//! | [`AsyncBus`] | once the message is queued (bounded) | [`RetryPolicy`] | [`DeadLetterSink`] |
//! | `bus-rabbitmq` | once the broker confirmed it | delay queues | dead-letter queue |
//!
//! The marketplace's handlers only implement the traits in [`handler`]; which
//! bus runs them is a start-up choice.
//!
//! With the `postgres` (or `sqlite`) feature, the `outbox` module provides a
//! transactional outbox: a handler stages the events it raises in its own
//! database transaction and a relay publishes them after commit, so an event
//! is never lost nor published for a change that rolled back.
//!
//! [`testing`] ships a recording bus for unit tests of code that dispatches.
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod bus;
pub mod dead_letter;
pub mod envelope;
pub mod error;
pub mod handler;
pub mod memory;
pub mod message;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub mod outbox;
pub mod query;
pub mod registry;
pub mod retry;
pub mod testing;

pub use bus::{BoxFuture, CommandBus, CommandBusExt, EventBus, EventBusExt};
pub use dead_letter::{DeadLetter, DeadLetterSink, InMemoryDeadLetters};
pub use envelope::{Envelope, TraceContext};
pub use error::{DispatchError, EncodeError, HandlerError, QueryError, RegistrationError};
pub use handler::{
    command_fn, event_fn, CommandHandler, EventHandler, MessageContext, QueryHandler,
};
pub use memory::{AsyncBus, AsyncBusConfig, InMemoryBus};
pub use message::{Command, Event, Message, Query};
pub use query::{QueryBus, QueryBusBuilder};
pub use registry::{Handlers, HandlersBuilder, RegisteredHandler, Subscription};
pub use retry::RetryPolicy;
