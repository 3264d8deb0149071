//! Builds the application from its configuration, identically for the
//! binary and the tests, and returns it unstarted: `run` it with a shutdown
//! future.
//!
//! Two processes, one file each:
//! - [`App`] (`serve.rs`): the HTTP API. With the in-memory buses it also
//!   runs the handlers and the outbox relay; with RabbitMQ it only publishes.
//! - [`Worker`] (`worker.rs`): consumes RabbitMQ, runs the handlers, relays
//!   the outbox, and answers health probes over HTTP.
//!
//! `wiring.rs` holds what both are built from: the database, the handlers,
//! the outbox relay and the broker readiness probe.

mod connections;
mod serve;
mod wiring;
mod worker;

pub use serve::App;
pub use wiring::{connect, rabbit_topology};
pub use worker::Worker;
