//! The batch handlers on both databases, called with a batch as the async
//! buses call them: each message of the batch keeps its own outcome, and
//! the batch is applied in one transaction.

use std::sync::Arc;

use bus_core::{BatchHandler, Command, Envelope, FailureKind, MessageContext};
use marketplace::{
    commands::{
        CreateOffer, CreateOfferHandler, SaveBook, SaveBookHandler, SaveUser, SaveUserHandler,
        Validated,
    },
    model::Revision,
    store::{Database, Repositories, SqliteStore},
};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

/// The batch as a bus hands it over: each command in its envelope, accepted
/// one millisecond after the one before.
fn batch<C: Command + Clone>(commands: &[C]) -> Vec<(C, MessageContext)> {
    let start = chrono::Utc::now();
    commands
        .iter()
        .zip(0..)
        .map(|(command, n)| {
            let mut envelope = Envelope::new(command).unwrap();
            envelope.timestamp = start + chrono::Duration::milliseconds(n);
            (
                command.clone(),
                MessageContext::new(Arc::new(envelope), 1, 8),
            )
        })
        .collect()
}

async fn sqlite() -> Repositories {
    let store = SqliteStore::open("sqlite::memory:", 1).await.unwrap();
    Database::Sqlite(store).repositories()
}

async fn outbox_len(database: &Database) -> i64 {
    match database {
        Database::Postgres(pool) => sqlx::query_scalar("SELECT count(*) FROM bus_outbox")
            .fetch_one(pool)
            .await
            .unwrap(),
        _ => unreachable!("counted on PostgreSQL only"),
    }
}

/// A seller and a book for the offers.
async fn catalogue(store: &Repositories) -> (Uuid, Uuid) {
    let (seller, book) = (Uuid::new_v4(), Uuid::new_v4());
    let revision = Revision {
        accepted_at: chrono::Utc::now(),
        envelope_id: Uuid::new_v4(),
    };
    store
        .users
        .save_user(
            &marketplace::model::User {
                id: seller,
                name: "Ann".into(),
            },
            &revision,
            None,
        )
        .await
        .unwrap();
    store
        .books
        .save_book(book, "Dune", "Frank Herbert", None, &revision, None)
        .await
        .unwrap();
    (seller, book)
}

fn offer(id: Uuid, book_id: Uuid, seller_id: Uuid, cents: i64) -> CreateOffer {
    CreateOffer {
        id,
        book_id,
        seller_id,
        price: Decimal::new(cents, 2),
        stock: 3,
    }
}

/// A batch of offers: new ones, one for a missing book, the same offer
/// twice, an id reused with another price, an invalid one. Each gets its
/// own outcome; the valid new ones are inserted once.
async fn offers_in_one_batch_each_get_their_own_outcome(store: &Repositories) -> Vec<Uuid> {
    let (seller, book) = catalogue(store).await;
    let (first, second, missing) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let mut invalid = offer(Uuid::new_v4(), book, seller, 100);
    invalid.stock = 0;
    let commands = [
        offer(first, book, seller, 1_000),
        offer(missing, Uuid::new_v4(), seller, 1_000),
        offer(second, book, seller, 2_000),
        offer(first, book, seller, 1_000),
        offer(second, book, seller, 2_500),
        invalid,
    ];
    let handler = Validated(CreateOfferHandler::new(store.offers.clone()));
    let results = handler.handle_batch(&batch(&commands)).await.unwrap();

    assert_eq!(results.len(), 6);
    assert!(results[0].is_ok(), "{:?}", results[0]);
    let missing_book = results[1].as_ref().unwrap_err();
    assert_eq!(missing_book.kind(), FailureKind::Retryable);
    assert!(missing_book.to_string().contains("does not exist"));
    assert!(results[2].is_ok(), "{:?}", results[2]);
    assert!(results[3].is_ok(), "the same offer again: {:?}", results[3]);
    let reused = results[4].as_ref().unwrap_err();
    assert_eq!(reused.kind(), FailureKind::Permanent);
    assert!(reused.to_string().starts_with("id-conflict"), "{reused}");
    assert_eq!(
        results[5].as_ref().unwrap_err().kind(),
        FailureKind::Permanent
    );

    let offers = store.offers.list_offers(book, None, 10).await.unwrap();
    let mut ids: Vec<Uuid> = offers.iter().map(|o| o.id).collect();
    ids.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(ids, expected, "each valid new offer inserted once");
    let price_of_second = offers.iter().find(|o| o.id == second).unwrap().price;
    assert_eq!(
        price_of_second,
        Decimal::new(2_000, 2),
        "the first write stands"
    );
    expected
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn on_postgres_offers_in_one_batch_each_get_their_own_outcome_and_one_event_each(
    pool: PgPool,
) {
    let database = Database::Postgres(pool);
    let store = database.repositories();
    offers_in_one_batch_each_get_their_own_outcome(&store).await;
    assert_eq!(outbox_len(&database).await, 2, "one event per new offer");
}

#[tokio::test]
async fn on_sqlite_offers_in_one_batch_each_get_their_own_outcome() {
    let store = sqlite().await;
    offers_in_one_batch_each_get_their_own_outcome(&store).await;
}

/// Saves of users and books in one batch: the last accepted save of each
/// wins, a book save by someone else than its owner is refused alone.
async fn saves_in_one_batch_apply_in_the_order_the_api_accepted_them(store: &Repositories) {
    let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let users = [
        SaveUser {
            id: ann,
            name: "Ann".into(),
        },
        SaveUser {
            id: bob,
            name: "Bob".into(),
        },
        SaveUser {
            id: ann,
            name: "Ann B.".into(),
        },
    ];
    let handler = Validated(SaveUserHandler::new(store.users.clone()));
    let results = handler.handle_batch(&batch(&users)).await.unwrap();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(
        store.users.get_user(ann).await.unwrap().unwrap().name,
        "Ann B."
    );
    assert_eq!(
        store.users.get_user(bob).await.unwrap().unwrap().name,
        "Bob"
    );

    let book = Uuid::new_v4();
    let books = [
        SaveBook {
            id: book,
            title: "Dune".into(),
            author: "Herbert".into(),
            requested_by: Some(ann),
        },
        SaveBook {
            id: book,
            title: "Taken".into(),
            author: "Bob".into(),
            requested_by: Some(bob),
        },
        SaveBook {
            id: book,
            title: "Dune".into(),
            author: "Frank Herbert".into(),
            requested_by: Some(ann),
        },
    ];
    let handler = Validated(SaveBookHandler::new(store.books.clone()));
    let results = handler.handle_batch(&batch(&books)).await.unwrap();
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    let refused = results[1].as_ref().unwrap_err();
    assert!(
        refused.to_string().starts_with("not-the-owner"),
        "{refused}"
    );
    let saved = store.books.get_book(book).await.unwrap().unwrap();
    assert_eq!(
        (saved.title.as_str(), saved.author.as_str()),
        ("Dune", "Frank Herbert")
    );
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn on_postgres_saves_in_one_batch_apply_in_the_order_the_api_accepted_them(pool: PgPool) {
    saves_in_one_batch_apply_in_the_order_the_api_accepted_them(
        &Database::Postgres(pool).repositories(),
    )
    .await;
}

#[tokio::test]
async fn on_sqlite_saves_in_one_batch_apply_in_the_order_the_api_accepted_them() {
    saves_in_one_batch_apply_in_the_order_the_api_accepted_them(&sqlite().await).await;
}
