//! Domain events raised by command handlers, and their subscribers.
//!
//! Handlers stage events in their own transaction (the outbox of
//! `bus_core::outbox`); a relay publishes them after commit. Subscribers
//! must be idempotent: an event may be delivered more than once and in any
//! order.

pub mod refresh_cheapest_offer;

use bus_core::{BatchConfig, Event, HandlersBuilder, Message};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use refresh_cheapest_offer::RefreshCheapestOffer;

use crate::store::Repositories;

/// An offer was put on sale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OfferCreated {
    /// The new offer.
    pub offer_id: Uuid,
    /// Its book.
    pub book_id: Uuid,
}

impl Message for OfferCreated {
    const NAME: &'static str = "marketplace.OfferCreated";
}
impl Event for OfferCreated {}

/// An order was confirmed and claimed stock from these books' offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockClaimed {
    /// The confirmed order.
    pub order_id: Uuid,
    /// Books whose offers lost stock, without duplicates.
    pub book_ids: Vec<Uuid>,
}

impl Message for StockClaimed {
    const NAME: &'static str = "marketplace.StockClaimed";
}
impl Event for StockClaimed {}

/// Subscriber name of [`RefreshCheapestOffer`] (names its queues).
pub const REFRESH_CHEAPEST_OFFER: &str = "refresh-cheapest-offer";

/// Subscribes every subscriber to its events, taking batches as `batch`
/// says.
pub fn register(
    handlers: HandlersBuilder,
    store: &Repositories,
    batch: BatchConfig,
) -> HandlersBuilder {
    let refresh = RefreshCheapestOffer::new(store.books.clone());
    handlers
        .subscribe_batch::<OfferCreated, _>(REFRESH_CHEAPEST_OFFER, refresh.clone(), batch)
        .subscribe_batch::<StockClaimed, _>(REFRESH_CHEAPEST_OFFER, refresh, batch)
}
