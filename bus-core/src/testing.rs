//! Test helpers for code that dispatches commands or publishes events.
//!
//! ```
//! # use bus_core::{testing::RecordingBus, Command, CommandBusExt, Message};
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Ping { n: u32 }
//! impl Message for Ping { const NAME: &'static str = "example.Ping"; }
//! impl Command for Ping {}
//!
//! # tokio_test(async {
//! let bus = RecordingBus::default();
//! bus.send(&Ping { n: 7 }).await.unwrap();
//! assert_eq!(bus.dispatched_of::<Ping>(), vec![Ping { n: 7 }]);
//! # });
//! # fn tokio_test(f: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::sync::{Arc, Mutex};

use crate::{bus::BoxFuture, CommandBus, DispatchError, Envelope, EventBus, Message};

/// A bus that records what it is given and handles nothing: assert on what
/// your code dispatched and published without running handlers.
#[derive(Debug, Clone, Default)]
pub struct RecordingBus {
    commands: Arc<Mutex<Vec<Envelope>>>,
    events: Arc<Mutex<Vec<Envelope>>>,
}

impl RecordingBus {
    /// Every command envelope dispatched so far.
    pub fn dispatched(&self) -> Vec<Envelope> {
        lock(&self.commands).clone()
    }

    /// Every event envelope published so far.
    pub fn published(&self) -> Vec<Envelope> {
        lock(&self.events).clone()
    }

    /// The dispatched commands of type `M`, decoded.
    pub fn dispatched_of<M: Message>(&self) -> Vec<M> {
        decode_all(&lock(&self.commands))
    }

    /// The published events of type `M`, decoded.
    pub fn published_of<M: Message>(&self) -> Vec<M> {
        decode_all(&lock(&self.events))
    }
}

fn lock(records: &Mutex<Vec<Envelope>>) -> std::sync::MutexGuard<'_, Vec<Envelope>> {
    records
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn decode_all<M: Message>(envelopes: &[Envelope]) -> Vec<M> {
    envelopes
        .iter()
        .filter(|envelope| envelope.message_type == M::NAME)
        .filter_map(|envelope| envelope.decode().ok())
        .collect()
}

impl CommandBus for RecordingBus {
    fn send_envelope(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
        lock(&self.commands).push(envelope);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl EventBus for RecordingBus {
    fn publish_envelope(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
        lock(&self.events).push(envelope);
        Box::pin(std::future::ready(Ok(())))
    }
}
