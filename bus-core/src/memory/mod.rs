//! In-process buses: [`InMemoryBus`] runs handlers inline, [`AsyncBus`]
//! queues messages for tokio workers with retries and dead letters.

mod async_bus;
mod sync_bus;

pub use async_bus::{AsyncBus, AsyncBusBuilder, AsyncBusConfig};
pub use sync_bus::InMemoryBus;
