//! # marketplace: a books marketplace on bus-core
//!
//! The API of a mobile app: users register, sell books (offers) and buy them
//! (orders). Writes are commands dispatched on a bus and answered `200` as
//! soon as the bus accepted them; reads are queries on PostgreSQL.
//!
//! Where things are:
//! - [`commands`]: one file per command, with its payload, its handler and
//!   the SQL it runs (`commands/create_order.rs` claims stock).
//! - [`events`]: the domain events and their subscribers
//!   (`events/refresh_cheapest_offer.rs` keeps each book's cheapest offer).
//! - [`queries`]: one file per query, with its SQL and its answer type.
//! - [`http`]: the axum routes, request validation and the single mapping of
//!   errors to `application/problem+json`.
//! - [`config`]: flags and environment variables.
//! - [`seed`]: the demo catalogue generator (`marketplace seed`).
//! - [`startup`]: builds the application (pool, migrations, buses, router)
//!   the same way for the binary and the tests.

pub mod commands;
pub mod config;
pub mod events;
pub mod http;
pub mod queries;
pub mod seed;
pub mod shutdown;
pub mod startup;
pub mod telemetry;

/// Migrations of the marketplace schema (the `migrations/` folder).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
