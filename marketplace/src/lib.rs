//! # marketplace: a books marketplace on bus-core
//!
//! The API of a mobile app: users register, sell books (offers) and buy them
//! (orders). Writes are commands dispatched on a bus and answered `200` as
//! soon as the bus accepted them; reads are queries on the database: an
//! embedded SQLite file by default, PostgreSQL in production.
//!
//! Where things are, each module above the ones it imports (`model` ←
//! `store` ← `events` ← `commands`, `queries` ← `http` ← `startup` ← `operations`):
//! - [`model`]: the read models (book, offer, user, order), the outcomes of
//!   the commands and the business rules that are not SQL (prices rounded
//!   to cents, quantities added up, what a stock claim decides and charges).
//! - [`commands`]: one file per command, with its payload, its validation
//!   and its handler (`commands/create_order.rs` claims stock).
//! - [`events`]: the domain events and their subscribers
//!   (`events/refresh_cheapest_offer.rs` keeps each book's cheapest offer).
//! - [`queries`]: one file per query and its handler.
//! - [`store`]: where SQL lives: the repository traits, the steps both
//!   databases share (`store/orders.rs`), and one implementation per
//!   database (`store/postgres/`, `store/sqlite/`).
//! - [`http`]: the axum routes, request validation and the single mapping of
//!   errors to `application/problem+json`.
//! - [`auth`]: who is asking: bearer tokens verified into a principal.
//! - [`config`]: flags and environment variables.
//! - [`seed`]: the demo catalogue generator (`marketplace seed`).
//! - [`operations`]: tools for operators (`marketplace dead-letters`).
//! - [`startup`]: builds the application (pool, migrations, buses, router)
//!   the same way for the binary and the tests.

pub mod auth;
pub mod commands;
pub mod config;
pub mod events;
pub mod http;
pub mod model;
pub mod operations;
pub mod queries;
pub mod seed;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;

pub use store::postgres::MIGRATOR;
