//! Tools an operator runs against a deployment, one file each.
//!
//! - [`dead_letters`]: `marketplace dead-letters list | show | replay |
//!   purge`, over the RabbitMQ `.dlq` queues or the `bus_dead_letters`
//!   table.

pub mod dead_letters;
