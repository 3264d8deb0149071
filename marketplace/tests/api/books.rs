use serde_json::{json, Value};
use uuid::Uuid;

use crate::{helpers::assert_problem, on_every_bus};

on_every_bus! {
    async fn a_book_without_offers_has_no_price_stock_or_offer(app) {
        let id = Uuid::new_v4();
        assert_eq!(app.put_book(id, "Dune").await.status(), 200);
        let book = app
            .eventually(|| async {
                let r = app.get(&format!("/books/{id}")).await;
                if r.status() == 200 { r.json::<Value>().await.ok() } else { None }
            })
            .await;
        assert_eq!(
            book,
            json!({ "id": id, "title": "Dune", "author": "Frank Herbert", "stock": 0, "price": 0.0, "offerId": null })
        );
    }

    async fn editing_a_book_keeps_its_cheapest_offer(app) {
        let seeded = app.seed_offer(9.99, 4).await;
        app.put("/book", &json!({ "id": seeded.book, "title": "Dune Messiah", "author": "F. Herbert" })).await;
        let book = app
            .eventually(|| async {
                let book = app.get_json(&format!("/books/{}", seeded.book)).await;
                (book["title"] == "Dune Messiah").then_some(book)
            })
            .await;
        assert_eq!(book["offerId"], json!(seeded.offer));
        assert_eq!(book["price"], json!(9.99));
        assert_eq!(book["stock"], json!(4));
    }

    async fn books_are_listed_in_stable_pages(app) {
        let mut ids = Vec::new();
        for n in 0..5 {
            let id = Uuid::new_v4();
            app.put_book(id, &format!("Book {n}")).await;
            // One at a time so registration order is the order sent.
            app.eventually(|| async { (app.get(&format!("/books/{id}")).await.status() == 200).then_some(()) }).await;
            ids.push(json!(id));
        }
        let all = app.get_json("/books").await;
        let listed: Vec<Value> = all.as_array().unwrap().iter().map(|b| b["id"].clone()).collect();
        assert_eq!(listed, ids);
        let page2 = app.get_json("/books?page=2&pageSize=2").await;
        let listed: Vec<Value> = page2.as_array().unwrap().iter().map(|b| b["id"].clone()).collect();
        assert_eq!(listed, ids[2..4].to_vec());
        assert_eq!(app.get_json("/books?page=9&pageSize=2").await, json!([]));
    }

    async fn an_unknown_book_is_404(app) {
        assert_problem(app.get(&format!("/books/{}", Uuid::new_v4())).await, 404).await;
    }
}
