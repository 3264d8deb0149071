//! HTTP tests of the marketplace, each on its own PostgreSQL database.

mod async_bus;
mod bad_input;
mod books;
mod concurrency;
mod helpers;
mod idempotency;
mod offers;
mod operations;
mod orders;
mod rabbitmq;
mod seed;
mod users;
