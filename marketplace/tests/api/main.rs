//! HTTP tests of the marketplace, each on its own database (PostgreSQL or
//! an SQLite file).

mod async_bus;
mod auth;
mod bad_input;
mod batches;
mod books;
mod caching;
mod compatibility;
mod concurrency;
mod dead_letters;
mod durable_bus;
mod edge;
mod helpers;
mod idempotency;
mod least_privilege;
mod my_lists;
mod offers;
mod operations;
mod orders;
mod pause;
mod rabbitmq;
mod reads;
mod replica;
mod saves;
mod search;
mod seed;
mod storage;
mod text;
mod tls;
mod trace;
mod users;
