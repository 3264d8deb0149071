//! Queries: what the GET routes ask, one file each with the query and its
//! handler.
//!
//! Queries run in the process that asks (through `bus_core::QueryBus`) and
//! read the database through the repositories of [`crate::store`], where
//! their SQL lives (`store/postgres/`, `store/sqlite/`); they answer the
//! read models of [`crate::model`] and never travel over a broker.

pub mod book_registration;
pub mod get_book;
pub mod get_order;
pub mod get_user;
pub mod list_books;
pub mod list_books_after;
pub mod list_offers;
pub mod list_user_offers;
pub mod list_user_orders;

pub use book_registration::GetBookRegistration;
pub use get_book::GetBook;
pub use get_order::GetOrder;
pub use get_user::GetUser;
pub use list_books::{BooksPage, ListBooks};
pub use list_books_after::{KeyedBooksPage, ListBooksAfter};
pub use list_offers::{ListOffers, OffersPage};
pub use list_user_offers::ListUserOffers;
pub use list_user_orders::ListUserOrders;

use bus_core::{QueryBus, RegistrationError};

use crate::store::Repositories;

/// Runs the marketplace's queries against the store: the one place that
/// decides which database each query reads.
///
/// - `reads` (a read replica with `--read-database-url`, else the primary):
///   what a client may see a replication lag late, [`ListBooks`],
///   [`ListBooksAfter`], [`GetBook`], [`ListOffers`], [`GetUser`],
///   [`ListUserOrders`] and [`ListUserOffers`].
/// - `primary`: [`GetOrder`] (a buyer sees the order they just placed at
///   once) and [`GetBookRegistration`] (the check before a write).
#[derive(Clone)]
pub struct Queries {
    reads: Repositories,
    primary: Repositories,
}

/// A query bus with every marketplace query registered: the reads a replica
/// may serve on `reads`, the others on `primary` (see [`Queries`]). Both are
/// the same repositories without a replica.
pub fn query_bus(
    primary: &Repositories,
    reads: &Repositories,
) -> Result<QueryBus, RegistrationError> {
    let handler = Queries {
        reads: reads.clone(),
        primary: primary.clone(),
    };
    QueryBus::builder()
        .query::<ListBooks, _>(handler.clone())
        .query::<ListBooksAfter, _>(handler.clone())
        .query::<GetBook, _>(handler.clone())
        .query::<GetBookRegistration, _>(handler.clone())
        .query::<ListOffers, _>(handler.clone())
        .query::<GetUser, _>(handler.clone())
        .query::<GetOrder, _>(handler.clone())
        .query::<ListUserOrders, _>(handler.clone())
        .query::<ListUserOffers, _>(handler)
        .build()
}
