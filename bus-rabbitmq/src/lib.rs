//! # bus-rabbitmq: bus-core's buses over RabbitMQ
//!
//! The product's core guarantee is that an accepted message is never lost.
//! This crate keeps it over a real broker:
//!
//! - [`RabbitPublisher`] implements [`bus_core::CommandBus`] and
//!   [`bus_core::EventBus`]. A publish returns `Ok` only once the broker has
//!   *confirmed* the persistent message; everything else (broker down, no
//!   confirm in time, negative confirm, unroutable) is an error the caller
//!   sees, never a silent drop.
//! - [`RabbitWorker`] consumes every queue of a set of [`bus_core::Handlers`],
//!   acknowledges a message only after its handler returned `Ok`, retries
//!   retryable failures through TTL delay queues and parks everything else in
//!   a dead-letter queue: a message is never dropped and a poison message
//!   never loops.
//! - Both declare the whole [`Topology`] on start and after every
//!   reconnection, and both reconnect by themselves (the worker with the
//!   exponential backoff of [`RabbitConfig::reconnect_policy`], a
//!   [`bus_core::RetryPolicy`] like the handlers' retries).
//!
//! ## Settlement and middleware
//!
//! The worker decides nothing on its own: it runs each delivery through
//! bus-core's shared invocation and settlement, exactly as the in-memory
//! buses do, and only translates the answer into AMQP:
//!
//! | [`bus_core::transport::decide`] says | the worker |
//! |---|---|
//! | ack | acknowledges the delivery |
//! | retry after `d` (retryable error or panic, attempts left) | publishes a copy with `x-attempt` + 1 to the delay queue of `d`, waits for the confirm, acknowledges |
//! | dead-letter (attempts spent, permanent, undecodable, unknown type, unsupported version) | publishes a copy with `x-error` (the reason) and `x-attempts` to the queue's `.dlq`, waits for the confirm, acknowledges |
//!
//! A copy that cannot be confirmed is not acknowledged: the delivery is
//! requeued, never lost. A body that is not an envelope at all is
//! dead-lettered before any handler runs.
//!
//! Per delivery, outermost first: the worker's `delivery` span (queue,
//! message id, attempt); bus-core's `handle` span; panic catching; the
//! [`bus_core::Middleware`] registered on the handlers, in registration
//! order; version check and upcasting; decoding; the handler.
//!
//! Table of contents:
//!
//! | module | concept |
//! |---|---|
//! | [`addresses`] | [`BrokerAddresses`]: one broker URL or a cluster's list, tried in turn, passwords never shown |
//! | [`config`] | [`RabbitConfig`]: broker address, namespace, prefetch, concurrency, retries, timeouts |
//! | [`naming`] | [`Naming`]: the one place exchange and queue names are made |
//! | [`topology`] | [`Topology`]: every exchange, queue and binding, declared idempotently |
//! | [`wire`] | how an [`bus_core::Envelope`] maps onto AMQP properties, headers and body |
//! | [`publisher`] | [`RabbitPublisher`]: confirmed, persistent, mandatory publishes over pooled channels |
//! | [`worker`] | [`RabbitWorker`]: sessions and reconnection, the consume loop, settlement onto AMQP, graceful shutdown |
//! | [`dead_letters`] | [`DeadLetterQueues`]: list, show, replay and purge what the `.dlq` queues hold |
//! | [`error`] | [`RabbitError`]: what can go wrong outside a publish |
//!
//! See the crate's README for the topology table and where each guarantee is
//! kept in the code.
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

pub mod addresses;
pub mod config;
mod confirm;
pub mod dead_letters;
pub mod error;
pub mod naming;
pub mod publisher;
pub mod topology;
pub mod wire;
pub mod worker;

pub use addresses::BrokerAddresses;
pub use config::{QueueType, RabbitConfig};
pub use dead_letters::{DeadLetterError, DeadLetterQueues};
pub use error::RabbitError;
pub use naming::Naming;
pub use publisher::RabbitPublisher;
pub use topology::Topology;
pub use worker::{RabbitWorker, WorkerControl};

/// The AMQP client this crate is built on, re-exported so applications and
/// tests use the exact same version.
pub use lapin;
