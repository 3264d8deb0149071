//! Commands: requests to change the marketplace, one file each.
//!
//! Each command is also the JSON body of its HTTP route, validated before
//! dispatch and again before its handler runs ([`validation`]). Handlers
//! are idempotent by the client-generated id, because every bus may deliver
//! a command more than once.

pub mod create_offer;
pub mod create_order;
pub mod save_book;
pub mod save_user;
pub mod validation;

pub use create_offer::{CreateOffer, CreateOfferHandler};
pub use create_order::{CreateOrder, CreateOrderHandler, OrderItem};
pub use save_book::{SaveBook, SaveBookHandler};
pub use save_user::{SaveUser, SaveUserHandler};
pub(crate) use validation::plain_text;
pub use validation::Validated;

use bus_core::{BatchConfig, HandlerError, HandlersBuilder, MessageContext};

use crate::{
    model::{IdConflict, Revision},
    store::Repositories,
};

/// Registers the handler of every command, each behind [`Validated`]:
/// `SaveUser`, `SaveBook` and `CreateOffer` take batches as `batch` says
/// (one transaction per batch); `CreateOrder`, one claim per order, takes
/// one message at a time.
pub fn register(
    handlers: HandlersBuilder,
    store: &Repositories,
    batch: BatchConfig,
) -> HandlersBuilder {
    handlers
        .command_batch::<SaveUser, _>(Validated(SaveUserHandler::new(store.users.clone())), batch)
        .command_batch::<SaveBook, _>(Validated(SaveBookHandler::new(store.books.clone())), batch)
        .command_batch::<CreateOffer, _>(
            Validated(CreateOfferHandler::new(store.offers.clone())),
            batch,
        )
        .command::<CreateOrder, _>(Validated(CreateOrderHandler::new(store.orders.clone())))
}

/// A create-once id reused with another payload: logged at `WARN` with both
/// fingerprints, and a permanent failure whose reason starts with
/// `id-conflict` (dead-lettered on asynchronous buses; `409` on the sync
/// bus, which finds the [`IdConflict`] in its source).
pub(crate) fn id_conflict(conflict: IdConflict) -> HandlerError {
    tracing::warn!(
        kind = conflict.kind,
        id = %conflict.id,
        stored_fingerprint = %conflict.stored,
        received_fingerprint = %conflict.received,
        "id reused with another payload: refused, the first write stands"
    );
    HandlerError::Permanent {
        message: conflict.to_string(),
        source: Some(Box::new(conflict)),
    }
}

/// A save's place in the order the API accepted saves: its envelope's
/// timestamp, set when the API accepted it and carried unchanged through
/// every bus and retry, then its envelope id.
pub(crate) fn revision(context: &MessageContext) -> Revision {
    Revision {
        accepted_at: context.envelope().timestamp,
        envelope_id: context.envelope().id,
    }
}

#[cfg(test)]
mod tests;
