//! One module per phase, in the order a full run measures them: accepted
//! offers beside raw publishes ([`offers`]), the same with the consumers
//! applying meanwhile ([`applying`]), latency at fixed offered rates
//! ([`latency`]), offers applied end to end beside the
//! raw two hops ([`end_to_end`]), the durable bus in process
//! ([`durable_bus`]) and accepted offers on the default durable bus, each
//! beside raw batched inserts ([`durable`]), given a cluster the write path
//! on quorum queues beside the raw references on the same cluster
//! ([`cluster`]), then reads beside pgbench ([`reads`]). Each returns its
//! figures; [`crate::report`] turns them into
//! `docs/performance.md`.

pub(crate) mod applying;
pub(crate) mod cluster;
pub(crate) mod durable;
pub(crate) mod durable_bus;
pub(crate) mod end_to_end;
pub(crate) mod latency;
pub(crate) mod offers;
pub(crate) mod raw_inserts;
pub(crate) mod reads;
