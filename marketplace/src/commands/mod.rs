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

use bus_core::HandlersBuilder;

use crate::store::Repositories;

/// Registers the handler of every command, each behind [`Validated`].
pub fn register(handlers: HandlersBuilder, store: &Repositories) -> HandlersBuilder {
    handlers
        .command::<SaveUser, _>(Validated(SaveUserHandler::new(store.users.clone())))
        .command::<SaveBook, _>(Validated(SaveBookHandler::new(store.books.clone())))
        .command::<CreateOffer, _>(Validated(CreateOfferHandler::new(store.offers.clone())))
        .command::<CreateOrder, _>(Validated(CreateOrderHandler::new(store.orders.clone())))
}
