//! The same write sent twice has the effect of sending it once.

use serde_json::json;
use uuid::Uuid;

use crate::on_every_bus;

on_every_bus! {
    async fn the_same_order_twice_claims_stock_once(app) {
        let seeded = app.seed_offer(10.0, 5).await;
        let (order, buyer) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(app.post_order(order, buyer, &[(seeded.offer, 2)]).await.status(), 200);
        assert_eq!(app.post_order(order, buyer, &[(seeded.offer, 2)]).await.status(), 200);
        assert_eq!(app.settled_order(order).await["status"], "confirmed");
        // Let the second copy be applied too before looking at the stock.
        app.eventually(|| async {
            let n = app.try_count("SELECT count(*) FROM bus_outbox").await?;
            (n == 0).then_some(())
        })
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(app.get_json(&format!("/offers/{}", seeded.book)).await[0]["stock"], 3);
        let orders = app.count("SELECT count(*) FROM orders").await;
        assert_eq!(orders, 1);
    }

    async fn the_same_offer_twice_is_listed_once(app) {
        let seeded = app.seed_offer(10.0, 5).await;
        assert_eq!(app.post_offer(seeded.offer, seeded.book, seeded.user, 10.0, 5).await.status(), 200);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let offers = app.get_json(&format!("/offers/{}", seeded.book)).await;
        assert_eq!(offers.as_array().unwrap().len(), 1);
        assert_eq!(offers[0]["stock"], 5);
    }

    async fn the_same_user_and_book_twice_are_stored_once(app) {
        let (user, book) = (Uuid::new_v4(), Uuid::new_v4());
        for _ in 0..2 {
            assert_eq!(app.put_user(user, "Ann").await.status(), 200);
            assert_eq!(app.put_book(book, "Dune").await.status(), 200);
        }
        app.eventually(|| async { (app.get(&format!("/books/{book}")).await.status() == 200).then_some(()) }).await;
        app.eventually(|| async { (app.get(&format!("/users/{user}")).await.status() == 200).then_some(()) }).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let users = app.count("SELECT count(*) FROM users").await;
        let books = app.count("SELECT count(*) FROM books").await;
        assert_eq!((users, books), (1, 1));
        assert_eq!(app.get_json("/books").await.as_array().unwrap().len(), 1);
        assert_eq!(app.get_json(&format!("/users/{user}")).await, json!({ "id": user, "name": "Ann" }));
    }
}
