//! Storage: the marketplace's repository traits, and one sqlx implementation
//! per database.
//!
//! Handlers and queries only see the traits of [`Repositories`]; which
//! database sits behind them is chosen once, at start-up, from
//! `DATABASE_URL`:
//!
//! | URL | implementation | for |
//! |---|---|---|
//! | `sqlite://marketplace.db` (the default) | [`sqlite`]: an embedded file, one writer | a laptop, demos: nothing to install |
//! | `postgres://…` | [`postgres`]: a connection pool, row locks | production, several processes, RabbitMQ |
//!
//! Every SQL statement of the marketplace lives in `postgres/` or `sqlite/`,
//! one file per aggregate (users, books, offers, orders); the schemas are in
//! `migrations/postgres/` and `migrations/sqlite/`. What is the same on both
//! databases is written once: applying an order (`orders.rs`) runs the same
//! steps on either, and the decisions are the model's. Both implementations
//! keep the same promises, which the HTTP test suite checks on each: writes
//! are idempotent by client id, stock is claimed all-or-nothing and never
//! below zero, and events are staged in the transaction of the change that
//! raised them (transactional outbox).
//!
//! The store depends on [`crate::model`] only: never on the commands or
//! queries that use it.

mod database;
mod error;
mod orders;
pub mod postgres;
mod repositories;
pub mod sqlite;

pub use database::{Database, NamedPool, OutboxBacklog, RABBITMQ_NEEDS_POSTGRES};
pub use error::{StoreError, POOL_TIMEOUTS};
pub use repositories::{
    BookRepository, BookSave, ConfirmedEvent, OfferRepository, OrderRepository, Repositories,
    UserRepository,
};
pub use sqlite::SqliteStore;
