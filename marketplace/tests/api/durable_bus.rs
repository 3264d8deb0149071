//! Behaviour specific to the durable bus (the rest of the suite runs on it
//! too, through `on_every_bus!`): commands wait in the `bus_messages` table
//! until applied, on both databases.

use marketplace::config::BusKind;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{spawn_app, spawn_app_on_sqlite, TestApp};

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
