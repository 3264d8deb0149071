//! Commands: requests to change the marketplace, one file each.
//!
//! Each command is also the JSON body of its HTTP route, validated before
//! dispatch. Handlers are idempotent by the client-generated id, because
//! every bus may deliver a command more than once.

pub mod create_offer;
pub mod create_order;
pub mod save_book;
pub mod save_user;

pub use create_offer::{CreateOffer, CreateOfferHandler};
pub use create_order::{CreateOrder, CreateOrderHandler, OrderItem};
pub use save_book::{SaveBook, SaveBookHandler};
pub use save_user::{SaveUser, SaveUserHandler};

use bus_core::HandlersBuilder;

use crate::store::Repositories;

/// Registers the handler of every command.
pub fn register(handlers: HandlersBuilder, store: &Repositories) -> HandlersBuilder {
    handlers
        .command::<SaveUser, _>(SaveUserHandler::new(store.users.clone()))
        .command::<SaveBook, _>(SaveBookHandler::new(store.books.clone()))
        .command::<CreateOffer, _>(CreateOfferHandler::new(store.offers.clone()))
        .command::<CreateOrder, _>(CreateOrderHandler::new(store.orders.clone()))
}
