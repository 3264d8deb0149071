//! Behaviour specific to the durable bus (the rest of the suite runs on it
//! too, through `on_every_bus!`): commands wait in the `bus_messages` table
//! until applied, on both databases.

use marketplace::config::BusKind;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{spawn_app, spawn_app_on_sqlite, TestApp, TestDb};

/// Commands are applied concurrently: an offer may overtake its book and
/// seller. Its row is rescheduled until they exist, then applied once.
async fn an_offer_sent_before_its_book_and_seller_is_listed_once_they_arrive(app: &TestApp) {
    let (book, seller, offer) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(
        app.post_offer(offer, book, seller, 5.0, 2).await.status(),
        200
    );
    // Not applied yet, so still a row of the queue (possibly retried).
    app.eventually(|| async {
        (app.count("SELECT count(*) FROM bus_messages WHERE attempt > 1")
            .await
            > 0)
        .then_some(())
    })
    .await;
    app.put_book(book, "Late book").await;
    app.put_user(seller, "Late seller").await;
    let listed = app.await_listed(book, offer).await;
    assert_eq!(listed["stock"], 2);
    app.eventually(|| async {
        (app.count("SELECT count(*) FROM bus_messages").await == 0).then_some(())
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM bus_dead_letters").await, 0);
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn an_offer_overtaking_its_book_is_retried_from_the_table_on_postgres(pool: PgPool) {
    let app = spawn_app(pool, BusKind::Durable).await;
    an_offer_sent_before_its_book_and_seller_is_listed_once_they_arrive(&app).await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_offer_overtaking_its_book_is_retried_from_the_table_on_sqlite() {
    let app = spawn_app_on_sqlite(BusKind::Durable).await;
    an_offer_sent_before_its_book_and_seller_is_listed_once_they_arrive(&app).await;
    app.shutdown().await;
}

/// Records, for every receipt a handler's transaction inserts, the queue
/// row's message type and subscriber (PostgreSQL).
const SEE_RECEIPTS_POSTGRES: &str = "
    CREATE TABLE receipts_seen (message_type TEXT NOT NULL, subscriber TEXT);
    CREATE FUNCTION see_receipt() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO receipts_seen
            SELECT message_type, subscriber FROM bus_messages WHERE id = NEW.message_row;
        RETURN NEW;
    END $$;
    CREATE TRIGGER see_receipt AFTER INSERT ON bus_receipts
        FOR EACH ROW EXECUTE FUNCTION see_receipt();";

/// The same on SQLite.
const SEE_RECEIPTS_SQLITE: &str = "
    CREATE TABLE receipts_seen (message_type TEXT NOT NULL, subscriber TEXT);
    CREATE TRIGGER see_receipt AFTER INSERT ON bus_receipts BEGIN
        INSERT INTO receipts_seen
            SELECT message_type, subscriber FROM bus_messages WHERE id = NEW.message_row;
    END;";

/// Every handler commits its message's receipt with its effect: a user, a
/// book, an offer, an order and the two events they raise each leave one
/// receipt, recorded while their row was still queued, and nothing is left
/// in the queue or among the receipts afterwards.
async fn every_handler_commits_its_receipt_with_its_effect(app: &TestApp) {
    let (user, book, offer, order) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    assert_eq!(app.put_user(user, "Ann").await.status(), 200);
    assert_eq!(app.put_book(book, "Dune").await.status(), 200);
    // The offer waits for its book and seller: no receipt until applied.
    app.eventually(|| async {
        (app.count("SELECT count(*) FROM receipts_seen").await >= 2).then_some(())
    })
    .await;
    assert_eq!(
        app.post_offer(offer, book, user, 5.0, 3).await.status(),
        200
    );
    app.await_listed(book, offer).await;
    assert_eq!(
        app.post_order(order, user, &[(offer, 1)]).await.status(),
        200
    );
    assert_eq!(app.settled_order(order).await["status"], "confirmed");
    app.eventually(|| async {
        (app.count("SELECT count(*) FROM bus_messages").await == 0).then_some(())
    })
    .await;
    for message_type in [
        "marketplace.SaveUser",
        "marketplace.SaveBook",
        "marketplace.CreateOffer",
        "marketplace.CreateOrder",
        "marketplace.OfferCreated",
        "marketplace.StockClaimed",
    ] {
        assert_eq!(
            app.count(&format!(
                "SELECT count(*) FROM receipts_seen WHERE message_type = '{message_type}'"
            ))
            .await,
            1,
            "one receipt of {message_type}"
        );
    }
    assert_eq!(app.count("SELECT count(*) FROM receipts_seen").await, 6);
    assert_eq!(app.count("SELECT count(*) FROM bus_receipts").await, 0);
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn every_handler_commits_its_receipt_with_its_effect_on_postgres(pool: PgPool) {
    sqlx::raw_sql(SEE_RECEIPTS_POSTGRES)
        .execute(&pool)
        .await
        .unwrap();
    let app = spawn_app(pool, BusKind::Durable).await;
    every_handler_commits_its_receipt_with_its_effect(&app).await;
    app.shutdown().await;
}

#[tokio::test]
async fn every_handler_commits_its_receipt_with_its_effect_on_sqlite() {
    let app = spawn_app_on_sqlite(BusKind::Durable).await;
    let Some(TestDb::Sqlite { store, .. }) = &app.db else {
        unreachable!("an SQLite app");
    };
    sqlx::raw_sql(SEE_RECEIPTS_SQLITE)
        .execute(store.writer())
        .await
        .unwrap();
    every_handler_commits_its_receipt_with_its_effect(&app).await;
    app.shutdown().await;
}
