//! The command handlers by their behaviour, with the library's
//! given/when/then harness ([`bus_core::testing::TestFramework`]) on an
//! embedded in-memory SQLite store: no server needed. The same handlers run
//! on every bus and on PostgreSQL in `tests/api/`.

use std::sync::Arc;

use bus_core::{
    testing::{TestFramework, Then},
    FailureKind,
};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::*;
use crate::{
    model::OrderStatus,
    store::{Repositories, SqliteStore},
};

async fn store() -> Repositories {
    let store = SqliteStore::open("sqlite::memory:", 1)
        .await
        .expect("an in-memory SQLite store");
    crate::store::Database::Sqlite(store).repositories()
}

fn ann(id: Uuid, name: &str) -> SaveUser {
    SaveUser {
        id,
        name: name.to_owned(),
    }
}

#[tokio::test]
async fn a_consumed_user_with_a_nul_in_its_name_is_refused_for_good_and_never_saved() {
    let store = store().await;
    let users = store.users.clone();
    let id = Uuid::new_v4();

    let error = TestFramework::new(|_| Validated(SaveUserHandler::new(users)))
        .when(ann(id, "An\0n"))
        .await
        .then_expect_error();

    assert_eq!(error.kind(), FailureKind::Permanent);
    assert!(
        error
            .to_string()
            .starts_with("invalid marketplace.SaveUser: name: "),
        "{error}"
    );
    assert_eq!(store.users.get_user(id).await.expect("read"), None);
}

#[tokio::test]
async fn a_consumed_user_is_saved_with_its_name_trimmed() {
    let store = store().await;
    let users = store.users.clone();
    let id = Uuid::new_v4();

    let then = TestFramework::new(|_| Validated(SaveUserHandler::new(users)))
        .when(ann(id, "  Ann "))
        .await;

    assert!(then.result().is_ok(), "{:?}", then.result());
    let saved = store
        .users
        .get_user(id)
        .await
        .expect("read")
        .expect("saved");
    assert_eq!(saved.name, "Ann");
}

#[tokio::test]
async fn a_consumed_order_of_zero_copies_is_refused_for_good_with_the_field_named() {
    let store = store().await;
    let orders = store.orders.clone();
    let order = CreateOrder {
        id: Uuid::new_v4(),
        user_id: Uuid::new_v4(),
        items: vec![OrderItem {
            offer_id: Uuid::new_v4(),
            quantity: 0,
        }],
    };

    let error = TestFramework::new(|_| Validated(CreateOrderHandler::new(orders)))
        .when(order.clone())
        .await
        .then_expect_error();

    assert_eq!(error.kind(), FailureKind::Permanent);
    assert!(error.to_string().contains("items[0].quantity"), "{error}");
    assert_eq!(store.orders.get_order(order.id).await.expect("read"), None);
}

#[tokio::test]
async fn an_offer_whose_book_is_not_registered_yet_asks_to_be_tried_again() {
    let store = store().await;
    let offers = store.offers.clone();
    let book = Uuid::new_v4();
    let offer = CreateOffer {
        id: Uuid::new_v4(),
        book_id: book,
        seller_id: Uuid::new_v4(),
        price: Decimal::new(1250, 2),
        stock: 3,
    };

    let error = TestFramework::new(|_| Validated(CreateOfferHandler::new(offers)))
        .when(offer)
        .await
        .then_expect_error_message(&format!("book {book} does not exist (yet)"));

    assert_eq!(error.kind(), FailureKind::Retryable);
    assert!(store
        .offers
        .list_offers(book, None, 10)
        .await
        .expect("read")
        .is_empty());
}

#[tokio::test]
async fn an_order_whose_buyer_never_appears_is_rejected_on_its_last_attempt() {
    let store = store().await;
    let orders: Arc<dyn crate::store::OrderRepository> = store.orders.clone();
    let (id, buyer) = (Uuid::new_v4(), Uuid::new_v4());
    let order = CreateOrder {
        id,
        user_id: buyer,
        items: vec![OrderItem {
            offer_id: Uuid::new_v4(),
            quantity: 1,
        }],
    };

    // The harness runs the handler once, as the last attempt.
    let then = TestFramework::new(|_| Validated(CreateOrderHandler::new(orders)))
        .when(order)
        .await;

    assert!(then.result().is_ok(), "{:?}", then.result());
    let stored = store
        .orders
        .get_order(id)
        .await
        .expect("read")
        .expect("recorded");
    assert_eq!(stored.status, OrderStatus::Rejected);
    assert_eq!(
        stored.reason.as_deref(),
        Some(format!("buyer {buyer} does not exist").as_str())
    );
}

fn book(id: Uuid, title: &str, sender: Option<Uuid>) -> SaveBook {
    SaveBook {
        id,
        title: title.to_owned(),
        author: "Frank Herbert".to_owned(),
        requested_by: sender,
    }
}

/// Runs the `SaveBook` handler once for book `id` titled `title`, as sent
/// by `sender` (`None`: accepted in open mode).
async fn save_book_as(store: &Repositories, id: Uuid, title: &str, sender: Option<Uuid>) -> Then {
    let books = store.books.clone();
    TestFramework::new(|_| Validated(SaveBookHandler::new(books)))
        .when(book(id, title, sender))
        .await
}

/// The title book `id` is saved with.
async fn saved_title(store: &Repositories, id: Uuid) -> String {
    store
        .books
        .get_book(id)
        .await
        .expect("read")
        .expect("saved")
        .title
}

/// Two users register the same new id at once: both pass the API's check
/// (the book does not exist yet for either), and the handler, checking in
/// its transaction, registers the book to the first one applied and
/// refuses the other for good.
#[tokio::test]
async fn of_two_users_registering_the_same_new_book_the_second_is_refused_for_good() {
    let store = store().await;
    let (id, ann, bob) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());

    let first = save_book_as(&store, id, "Dune", Some(ann)).await;
    assert!(first.result().is_ok(), "{:?}", first.result());
    let error = save_book_as(&store, id, "Not Dune", Some(bob))
        .await
        .then_expect_error();

    assert_eq!(error.kind(), FailureKind::Permanent);
    assert!(error.to_string().starts_with("not-the-owner"), "{error}");
    assert_eq!(saved_title(&store, id).await, "Dune");
    assert_eq!(
        store.books.book_registration(id).await.expect("read"),
        Some(crate::model::BookRegistration {
            registered_by: Some(ann)
        })
    );

    // The owner edits it; a save accepted in open mode is not checked.
    for (title, sender) in [("Dune (revised)", Some(ann)), ("Dune (open)", None)] {
        let then = save_book_as(&store, id, title, sender).await;
        assert!(then.result().is_ok(), "{:?}", then.result());
        assert_eq!(saved_title(&store, id).await, title);
    }
}

#[tokio::test]
async fn a_book_registered_in_open_mode_is_edited_by_no_signed_in_user() {
    let store = store().await;
    let id = Uuid::new_v4();
    let open = save_book_as(&store, id, "Dune", None).await;
    assert!(open.result().is_ok(), "{:?}", open.result());

    let error = save_book_as(&store, id, "Mine now", Some(Uuid::new_v4()))
        .await
        .then_expect_error();

    assert_eq!(error.kind(), FailureKind::Permanent);
    assert_eq!(saved_title(&store, id).await, "Dune");
}
