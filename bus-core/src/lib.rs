//! # bus-core: commands, queries and domain events
//!
//! An application built on this crate talks in three kinds of messages:
//!
//! - A **command** ([`Command`]) asks for a change: "create this offer". It has
//!   exactly one handler ([`CommandHandler`]). Sending it
//!   ([`CommandBusExt::send`]) hands it to a bus, which applies it now
//!   (in-memory sync bus) or later (in-memory async bus, RabbitMQ).
//! - A **domain event** ([`Event`]) says a change happened: "offer created".
//!   Publishing it ([`EventBusExt::publish`]) reaches any number of named
//!   subscribers ([`EventHandler`]), each on its own, each retried on its own.
//! - A **query** ([`Query`]) asks a question and waits for the answer. It is
//!   answered in-process by its one [`QueryHandler`] through the [`QueryBus`];
//!   queries never travel over a broker.
//!
//! Every command and event travels in one [`Envelope`]: message id, type name,
//! version, timestamp, headers (trace context, correlation and causation ids)
//! and a JSON payload. All transports share it, so a handler sees the same
//! bytes whichever bus runs it.
//!
//! Handlers are registered once in a [`HandlersBuilder`], with the
//! [`Middleware`] wrapped around all of them and the upcasters that read
//! older payload versions; [`HandlersBuilder::build`] refuses a second
//! handler for the same command. A bus is built from the resulting
//! [`Handlers`]:
//!
//! | bus | `send` returns | retries | failures end up |
//! |---|---|---|---|
//! | [`InMemoryBus`] | after the handler ran, with its result | none | returned to the caller |
//! | [`AsyncBus`] | once the message is queued (bounded) | [`RetryPolicy`] | [`DeadLetterSink`] |
//! | `bus-rabbitmq` | once the broker confirmed it | delay queues | dead-letter queue |
//! | `DurableBus` (features `postgres`, `sqlite`) | once its row is committed in the database | `not_before` on the row | `bus_dead_letters` table |
//!
//! A handler may also take batches: a [`BatchHandler`], registered with
//! [`HandlersBuilder::command_batch`] or [`HandlersBuilder::subscribe_batch`]
//! and a [`BatchConfig`], applies up to `max_messages` messages of one type
//! in one call (one transaction) and returns one outcome per message, each
//! settled on its own; a batch that fails as a whole is run again message
//! by message, so a poison message never takes its neighbours with it. The
//! [`AsyncBus`] and the RabbitMQ worker feed it batches; other buses, one
//! message at a time.
//!
//! ## One settlement policy
//!
//! Every bus runs a handler the same way
//! ([`transport::RegisteredHandler::invoke`]) and settles its result with
//! the same function ([`transport::decide`]):
//!
//! | handler result ([`HandlerError::kind`]) | settlement |
//! |---|---|
//! | `Ok` | acknowledged |
//! | [`FailureKind::Retryable`], attempts left | retried after the [`RetryPolicy`] backoff |
//! | [`FailureKind::Retryable`], attempts spent | dead-lettered with the error as reason |
//! | [`FailureKind::Permanent`] (also undecodable payload, unknown type, unsupported version) | dead-lettered at once |
//! | [`FailureKind::Infrastructure`], whatever the attempt | kept, attempt not counted; the consumer pauses behind its [`CircuitBreaker`] and runs it again once the dependency answers |
//!
//! A database error becomes a [`HandlerError`] through `From<sqlx::Error>`
//! (features `postgres`, `sqlite`), classified in one place,
//! `database_failure_kind`: the database unreachable, a pool timeout,
//! SQLSTATE classes `08`, `53`, `57` and the serialization conflicts
//! `40001`/`40P01` are infrastructure; data exceptions (`22`) and constraint
//! violations (`23`) are permanent; the rest is retryable.
//!
//! ## Pausing while a dependency is down
//!
//! An infrastructure failure is not the message's fault, so it must not use
//! up the message's attempts: a database outage longer than the retry
//! schedule would otherwise dead-letter valid work. Instead the consumer
//! [`trip`](CircuitBreaker::trip)s its [`CircuitBreaker`]: it stops starting
//! messages, keeps the failed one (the RabbitMQ worker holds the delivery
//! unacknowledged), and a single probe (e.g. `SELECT 1`, given by the
//! application) tries the dependency with doubling, jittered delays
//! ([`BreakerConfig`]). The first answer closes the breaker and consuming
//! resumes. [`CircuitBreaker::paused`] says why a consumer is paused, for a
//! readiness probe. The [`AsyncBus`] takes its breaker from
//! [`AsyncBus::builder`]; the sync bus, with no one to hold the message for,
//! returns the failure to its caller (an API answers `503`).
//!
//! A panic is a bug that may depend on changing state, so it is caught and
//! classified retryable ([`HandlerError::Panicked`]): the async buses retry
//! it, then dead-letter it with a reason naming the panic. The sync bus runs
//! with one attempt and no one to retry for: a failed command's error, a
//! panic included, goes back to the caller.
//!
//! ## Middleware order
//!
//! Outermost first: the `handle` tracing span (message id, type, attempt,
//! subscriber), panic catching, the registered [`Middleware`] in
//! registration order, the version check and upcasting, payload decoding,
//! the handler. Metrics, timeouts or circuit breaking are one middleware
//! each and apply to every bus.
//!
//! ## Modules
//!
//! Everything an application uses is at the crate root; three modules group
//! what only some code needs:
//!
//! | module | for |
//! |---|---|
//! | [`transport`] | writers of transports: registered handlers, the shared invocation, the settlement, envelope assembly |
//! | [`testing`] | tests: a recording bus and a given/when/then harness for handlers |
//! | `outbox` (features `postgres`, `sqlite`) | a transactional outbox: events staged in the handler's transaction, relayed after commit |
//! | `durable` (features `postgres`, `sqlite`) | `DurableBus`: the queue as a table of the application's database, no broker needed |
//!
//! With the same features, `DatabaseDeadLetters` keeps an [`AsyncBus`]'s
//! dead letters in a `bus_dead_letters` table instead of in memory, and
//! `PausedQueues` keeps in a `bus_paused_queues` table which consumers an
//! operator paused, so that a restarted worker keeps them paused.
//!
//! The private modules behind the root, one concept each: `message` (the
//! traits messages implement), `envelope`, `handler` (what application code
//! implements), `registry` ([`Handlers`]), `middleware`, `settlement`,
//! `breaker` ([`CircuitBreaker`]), `retry` ([`RetryPolicy`]), `batch`
//! ([`BatchHandler`]), `batch_run` (a batch through a registered handler), `bus` (the sending traits), `memory` (the
//! in-process buses), `dead_letter`, `query` ([`QueryBus`]), `error`.
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

mod batch;
mod batch_run;
mod breaker;
mod bus;
mod dead_letter;
pub mod dead_letter_ops;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod dead_letter_table;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub mod durable;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod durable_dead_letters;
mod envelope;
mod error;
mod handler;
mod memory;
mod message;
pub mod metrics;
mod middleware;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub mod outbox;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod paused_queues;
mod query;
mod registry;
mod retry;
mod settlement;
pub mod testing;
pub mod transport;

pub use batch::{BatchConfig, BatchHandler, BatchOutcome};
pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker, Probe};
pub use bus::{BoxFuture, CommandBus, CommandBusExt, EventBus, EventBusExt};
pub use dead_letter::{DeadLetter, DeadLetterSink, InMemoryDeadLetters};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use dead_letter_table::{DeadLetterTable, DeadLetterTableError};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use durable::{DurableBus, DurableBusBuilder, DurableBusConfig, GroupCommits};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use durable_dead_letters::DatabaseDeadLetters;
#[cfg(feature = "postgres")]
pub use durable_dead_letters::POSTGRES_SCHEMA as DEAD_LETTERS_POSTGRES_SCHEMA;
#[cfg(feature = "sqlite")]
pub use durable_dead_letters::SQLITE_SCHEMA as DEAD_LETTERS_SQLITE_SCHEMA;
pub use envelope::{
    Envelope, InvalidTraceParent, TraceContext, CAUSATION_ID, CORRELATION_ID, TRACEPARENT,
};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use error::database_failure_kind;
pub use error::{
    BoxError, DispatchError, EncodeError, FailureKind, HandlerError, QueryError, RegistrationError,
};
pub use handler::{
    command_fn, event_fn, CommandFn, CommandHandler, EventFn, EventHandler, MessageContext,
    QueryHandler, Receipt,
};
pub use memory::{AsyncBus, AsyncBusBuilder, AsyncBusConfig, InMemoryBus};
pub use message::{Command, Event, Message, Query};
pub use middleware::{Middleware, Next};
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use paused_queues::{PausedQueue, PausedQueues, PausedQueuesError};
pub use query::{QueryBus, QueryBusBuilder};
pub use registry::{Handlers, HandlersBuilder};
pub use retry::RetryPolicy;
