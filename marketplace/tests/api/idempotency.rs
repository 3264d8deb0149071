//! The same write sent twice (a client retrying, a message redelivered) has
//! the effect of sending it once: the copy is handled without error, changes
//! nothing a user sees, and leaves no dead letter.

use bus_core::TraceContext;
use serde_json::json;
use uuid::Uuid;

use crate::{
    helpers::{assert_problem, logged, TestApp},
    on_every_bus,
};

on_every_bus! {
    async fn an_order_sent_twice_claims_stock_once_and_the_copy_is_reported_as_already_applied(app) {
        let seeded = app.seed_offer(10.0, 5).await;
        let (order, buyer) = (Uuid::new_v4(), seeded.user);
        let body = json!({ "id": order, "userId": buyer, "items": [{ "offerId": seeded.offer, "quantity": 2 }] });
        let trace = TraceContext::new_root();
        for _ in 0..2 {
            assert_eq!(app.post_traced("/order", &body, &trace).await.status(), 200);
        }
        app.await_commands_applied(&trace, 2).await;

        let order_id = order.to_string();
        assert_eq!(
            logged("order already applied", &[("order_id", &order_id)]).len(),
            1,
            "the handler saw the copy as already applied"
        );
        let stored = app.get_json(&format!("/orders/{order}")).await;
        assert_eq!(stored["status"], "confirmed");
        assert_eq!(
            stored["items"],
            json!([{ "offerId": seeded.offer, "quantity": 2, "unitPrice": 10.0, "total": 20.0 }])
        );
        assert_eq!(stored["total"], 20.0, "charged once");
        assert_eq!(app.get_json(&format!("/offers/{}", seeded.book)).await[0]["stock"], 3);
        // The book's cheapest offer is refreshed by an event subscriber,
        // after the command: wait for it to show the offer's stock.
        app.eventually(|| async {
            let book = app.get_json(&format!("/books/{}", seeded.book)).await;
            (book["stock"] == 3).then_some(())
        })
        .await;
        assert_eq!(app.dead_letter_count().await, 0);
    }

    async fn an_offer_sent_again_after_a_sale_keeps_the_stock_the_sale_left(app) {
        let seeded = app.seed_offer(10.0, 5).await;
        let order = Uuid::new_v4();
        assert_eq!(app.post_order(order, seeded.user, &[(seeded.offer, 2)]).await.status(), 200);
        assert_eq!(app.settled_order(order).await["status"], "confirmed");

        let offer = json!({ "id": seeded.offer, "bookId": seeded.book, "sellerId": seeded.user, "price": 10.0, "stock": 5 });
        let trace = TraceContext::new_root();
        assert_eq!(app.post_traced("/offer", &offer, &trace).await.status(), 200);
        app.await_commands_applied(&trace, 1).await;

        let offers = app.get_json(&format!("/offers/{}", seeded.book)).await;
        assert_eq!(offers.as_array().map(Vec::len), Some(1), "{offers}");
        assert_eq!(offers[0]["id"], json!(seeded.offer));
        assert_eq!(offers[0]["stock"], 3, "the copy does not restock the offer");
        assert_eq!(app.dead_letter_count().await, 0);
    }

    async fn a_user_and_a_book_saved_twice_are_listed_once_as_saved(app) {
        let (user, book) = (Uuid::new_v4(), Uuid::new_v4());
        let trace = TraceContext::new_root();
        for _ in 0..2 {
            let ann = json!({ "id": user, "name": "Ann" });
            assert_eq!(app.put_traced("/user", &ann, &trace).await.status(), 200);
            let dune = json!({ "id": book, "title": "Dune", "author": "Frank Herbert" });
            assert_eq!(app.put_traced("/book", &dune, &trace).await.status(), 200);
        }
        app.await_commands_applied(&trace, 4).await;

        assert_eq!(app.get_json(&format!("/users/{user}")).await, json!({ "id": user, "name": "Ann" }));
        let books = app.get_json("/books").await;
        assert_eq!(books.as_array().map(Vec::len), Some(1), "{books}");
        assert_eq!(books[0]["id"], json!(book));
        assert_eq!(books[0]["title"], "Dune");
        assert_eq!(app.dead_letter_count().await, 0);
    }
}

on_every_bus! {
    async fn an_offer_id_reused_with_another_payload_leaves_the_first_offer_and_is_refused_as_an_id_conflict(app) {
        let seeded = app.seed_offer(10.0, 5).await;
        let response = app.post_offer(seeded.offer, seeded.book, seeded.user, 1.0, 900).await;
        expect_id_conflict(app, seeded.offer, response).await;
        let offers = app.get_json(&format!("/offers/{}", seeded.book)).await;
        assert_eq!(offers.as_array().map(Vec::len), Some(1), "{offers}");
        assert_eq!((offers[0]["price"].as_f64(), offers[0]["stock"].as_i64()), (Some(10.0), Some(5)));
    }

    async fn an_order_id_reused_with_another_payload_keeps_the_first_order_and_is_refused_as_an_id_conflict(app) {
        let seeded = app.seed_offer(10.0, 5).await;
        let order = Uuid::new_v4();
        assert_eq!(app.post_order(order, seeded.user, &[(seeded.offer, 2)]).await.status(), 200);
        assert_eq!(app.settled_order(order).await["status"], "confirmed");
        let response = app.post_order(order, seeded.user, &[(seeded.offer, 3)]).await;
        expect_id_conflict(app, order, response).await;
        let stored = app.get_json(&format!("/orders/{order}")).await;
        assert_eq!(stored["items"][0]["quantity"], 2);
        assert_eq!(app.get_json(&format!("/offers/{}", seeded.book)).await[0]["stock"], 3);
    }

    async fn a_pending_order_id_reused_with_other_items_never_claims_them(app) {
        let seeded = app.seed_offer(10.0, 5).await;
        let (order, missing_offer) = (Uuid::new_v4(), Uuid::new_v4());
        // Waits (pending) for an offer that never comes, then is rejected.
        assert_eq!(app.post_order(order, seeded.user, &[(missing_offer, 1)]).await.status(), 200);
        app.eventually(|| async { (app.get(&format!("/orders/{order}")).await.status() == 200).then_some(()) }).await;
        let response = app.post_order(order, seeded.user, &[(seeded.offer, 4)]).await;
        expect_id_conflict(app, order, response).await;
        let settled = app.settled_order(order).await;
        assert_eq!(settled["status"], "rejected", "{settled}");
        assert_eq!(settled["items"], json!([{ "offerId": missing_offer, "quantity": 1, "unitPrice": null, "total": null }]));
        assert_eq!(app.get_json(&format!("/offers/{}", seeded.book)).await[0]["stock"], 5);
    }
}

/// On the sync bus the write is answered `409`; on an asynchronous bus it
/// is accepted, then dead-lettered with an `id-conflict` reason. Either way
/// an operator reads a warning with both payloads' fingerprints.
async fn expect_id_conflict(app: &TestApp, id: Uuid, response: reqwest::Response) {
    expect_refusal(app, response).await;
    let warnings = logged(
        "id reused with another payload: refused, the first write stands",
        &[("id", &id.to_string())],
    );
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let fingerprint = |name| warnings[0].fields.get(name).cloned().unwrap_or_default();
    let (stored, received) = (
        fingerprint("stored_fingerprint"),
        fingerprint("received_fingerprint"),
    );
    assert_eq!((stored.len(), received.len()), (64, 64), "{warnings:?}");
    assert_ne!(stored, received);
}

async fn expect_refusal(app: &TestApp, response: reqwest::Response) {
    if app.is_sync() {
        let problem = assert_problem(response, 409).await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .starts_with("id-conflict"),
            "{problem}"
        );
        assert_eq!(app.dead_letter_count().await, 0);
        return;
    }
    assert_eq!(response.status(), 200);
    app.eventually(|| async { (app.dead_letter_count().await > 0).then_some(()) })
        .await;
    let reasons = app.dead_letter_reasons().await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].starts_with("id-conflict"), "{reasons:?}");
}
