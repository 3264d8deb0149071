use serde_json::{json, Value};
use uuid::Uuid;

use crate::{helpers::assert_problem, on_every_bus};

on_every_bus! {
    async fn an_offer_is_listed_under_its_book_with_its_seller(app) {
        let seeded = app.seed_offer(12.5, 3).await;
        let offers = app.get_json(&format!("/offers/{}", seeded.book)).await;
        assert_eq!(
            offers,
            json!([{ "id": seeded.offer, "bookId": seeded.book, "sellerId": seeded.user,
                     "sellerName": "Seller", "price": 12.5, "stock": 3 }])
        );
        let book = app.get_json(&format!("/books/{}", seeded.book)).await;
        assert_eq!((book["price"].clone(), book["stock"].clone()), (json!(12.5), json!(3)));
    }

    async fn offers_are_listed_cheapest_first_and_the_book_carries_the_cheapest(app) {
        let seeded = app.seed_offer(20.0, 1).await;
        let cheaper = Uuid::new_v4();
        app.post_offer(cheaper, seeded.book, seeded.user, 7.25, 2).await;
        let book = app.await_listed(seeded.book, cheaper).await;
        assert_eq!((book["price"].clone(), book["stock"].clone()), (json!(7.25), json!(2)));
        let offers = app.get_json(&format!("/offers/{}", seeded.book)).await;
        let prices: Vec<Value> = offers.as_array().unwrap().iter().map(|o| o["price"].clone()).collect();
        assert_eq!(prices, vec![json!(7.25), json!(20.0)]);
    }

    async fn a_book_without_offers_lists_no_sellers(app) {
        assert_eq!(app.get_json(&format!("/offers/{}", Uuid::new_v4())).await, json!([]));
    }
}

mod an_offer_sent_before_its_book_and_seller {
    use super::*;
    use crate::helpers::{spawn_app, spawn_app_on_sqlite, TestApp};
    use marketplace::config::BusKind;

    /// On the async bus the offer waits, through retries, for its book and
    /// seller, then is listed.
    #[sqlx::test(migrator = "marketplace::MIGRATOR")]
    async fn is_listed_once_they_arrive_on_the_async_bus(pool: sqlx::PgPool) {
        let app = spawn_app(pool, BusKind::InMemoryAsync).await;
        is_listed_once_they_arrive(&app).await;
        app.shutdown().await;
    }

    /// The same on SQLite.
    #[tokio::test]
    async fn is_listed_once_they_arrive_on_the_async_bus_on_sqlite() {
        let app = spawn_app_on_sqlite(BusKind::InMemoryAsync).await;
        is_listed_once_they_arrive(&app).await;
        app.shutdown().await;
    }

    async fn is_listed_once_they_arrive(app: &TestApp) {
        let (book, seller, offer) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(
            app.post_offer(offer, book, seller, 5.0, 1).await.status(),
            200
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        app.put_book(book, "Late book").await;
        app.put_user(seller, "Late seller").await;
        let listed = app.await_listed(book, offer).await;
        assert_eq!(listed["stock"], json!(1));
        assert_eq!(
            app.get_json(&format!("/offers/{book}"))
                .await
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert!(app.dead_letters.is_empty());
    }

    /// The sync bus does not retry: the client is told at once.
    #[sqlx::test(migrator = "marketplace::MIGRATOR")]
    async fn is_answered_409_on_the_sync_bus(pool: sqlx::PgPool) {
        let app = spawn_app(pool, BusKind::InMemory).await;
        is_answered_409(&app).await;
        app.shutdown().await;
    }

    /// The same on SQLite.
    #[tokio::test]
    async fn is_answered_409_on_the_sync_bus_on_sqlite() {
        let app = spawn_app_on_sqlite(BusKind::InMemory).await;
        is_answered_409(&app).await;
        app.shutdown().await;
    }

    async fn is_answered_409(app: &TestApp) {
        let response = app
            .post_offer(Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4(), 5.0, 1)
            .await;
        let problem = assert_problem(response, 409).await;
        assert!(
            problem["detail"].as_str().unwrap().contains("book"),
            "{problem}"
        );
    }

    /// An offer whose book never comes is dead-lettered, not dropped.
    #[sqlx::test(migrator = "marketplace::MIGRATOR")]
    async fn is_dead_lettered_if_they_never_arrive(pool: sqlx::PgPool) {
        let app = crate::helpers::spawn_app_with(
            pool,
            BusKind::InMemoryAsync,
            &["--retry-max-attempts", "3"],
        )
        .await;
        let offer = Uuid::new_v4();
        assert_eq!(
            app.post_offer(offer, Uuid::new_v4(), Uuid::new_v4(), 5.0, 1)
                .await
                .status(),
            200
        );
        let dead = app
            .eventually(|| async { app.dead_letters.list().into_iter().next() })
            .await;
        assert_eq!(dead.envelope.message_type, "marketplace.CreateOffer");
        assert_eq!(dead.attempts, 3);
        assert!(dead.error.contains("does not exist"), "{}", dead.error);
        assert!(dead.envelope.payload.get().contains(&offer.to_string()));
    }
}
