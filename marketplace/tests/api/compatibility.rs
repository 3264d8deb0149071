//! Requests shaped exactly as clients of the original API send them (the
//! mobile app, the load scenarios): camelCase fields, prices as floats with
//! many decimals, large stocks, no paging parameters. They get the answers
//! the original gave: `200` with an empty body on writes, the documented
//! bodies on reads.

use serde_json::{json, Value};
use uuid::Uuid;

use crate::{
    helpers::{assert_problem, TestApp},
    on_every_bus,
};

/// Sends `body` as the original clients do, and expects the original's
/// answer to a write: `200` with an empty body.
async fn write(app: &TestApp, method: &str, path: &str, body: Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let response = app
        .client
        .request(method.clone(), format!("{}{path}", app.address))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{method} {path} {body}");
    assert_eq!(
        response.text().await.unwrap(),
        "",
        "{method} {path}: empty body"
    );
}

/// Registers a seller and a book the way the original clients do, and
/// waits until both are readable.
async fn seller_and_book(app: &TestApp) -> (Uuid, Uuid) {
    let (seller, book) = (Uuid::new_v4(), Uuid::new_v4());
    write(
        app,
        "PUT",
        "/user",
        json!({ "id": seller, "name": "Jane Roe" }),
    )
    .await;
    write(
        app,
        "PUT",
        "/book",
        json!({ "id": book, "title": "Dune", "author": "Frank Herbert" }),
    )
    .await;
    for path in [format!("/users/{seller}"), format!("/books/{book}")] {
        app.eventually(|| async { (app.get(&path).await.status() == 200).then_some(()) })
            .await;
    }
    (seller, book)
}

/// Offers `stock` copies of `book` at `price` and waits until it is listed.
async fn offer(app: &TestApp, book: Uuid, seller: Uuid, price: Value, stock: Value) -> Uuid {
    let id = Uuid::new_v4();
    write(
        app,
        "POST",
        "/offer",
        json!({ "id": id, "bookId": book, "sellerId": seller, "price": price, "stock": stock }),
    )
    .await;
    app.eventually(|| async {
        let offers = app.get_json(&format!("/offers/{book}")).await;
        offers
            .as_array()?
            .iter()
            .any(|o| o["id"] == json!(id))
            .then_some(())
    })
    .await;
    id
}

/// The listed price of offer `id` of `book`.
async fn listed_price(app: &TestApp, book: Uuid, id: Uuid) -> Value {
    let offers = app.get_json(&format!("/offers/{book}")).await;
    offers
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == json!(id))
        .map(|o| o["price"].clone())
        .unwrap()
}

on_every_bus! {
    async fn a_new_user_registers_a_book_and_offers_copies_at_a_float_price(app) {
        let (seller, book) = seller_and_book(app).await;
        let id = offer(app, book, seller, json!(45.31927383), json!(9999)).await;

        assert_eq!(
            app.get_json(&format!("/offers/{book}")).await,
            json!([{ "id": id, "bookId": book, "sellerId": seller, "sellerName": "Jane Roe",
                     "price": 45.32, "stock": 9999 }])
        );
        let expected = json!({ "id": book, "title": "Dune", "author": "Frank Herbert",
                               "stock": 9999, "price": 45.32, "offerId": id });
        let listed = app
            .eventually(|| async {
                let book = app.get_json(&format!("/books/{book}")).await;
                (book["offerId"] == json!(id)).then_some(book)
            })
            .await;
        assert_eq!(listed, expected);
        // No paging parameters: the first page, in registration order.
        assert_eq!(app.get_json("/books").await, json!([expected]));
        assert_eq!(app.get_json(&format!("/users/{seller}")).await,
                   json!({ "id": seller, "name": "Jane Roe" }));
    }

    async fn prices_are_stored_rounded_half_up_to_cents(app) {
        let (seller, book) = seller_and_book(app).await;
        for (sent, stored) in [
            (json!(0.005), json!(0.01)),
            (json!(0.125), json!(0.13)),
            (json!(2.675), json!(2.68)),
            (json!(99.994999), json!(99.99)),
            (json!(12), json!(12.0)),
            (json!(1e2), json!(100.0)),
            (json!(1_000_000_000.004), json!(1_000_000_000.0)),
        ] {
            let id = offer(app, book, seller, sent.clone(), json!(1)).await;
            assert_eq!(listed_price(app, book, id).await, stored, "price sent: {sent}");
        }
    }

    async fn a_price_that_rounds_to_zero_or_above_the_maximum_is_422(app) {
        let id = Uuid::new_v4();
        for (price, rule) in [
            ("0.004", "0.005"),
            ("5e-324", "0.005"),
            ("-1.5", "0.005"),
            ("1000000000.005", "1000000000"),
            ("2.7e307", "1000000000"),
        ] {
            let body = format!(
                r#"{{"id":"{id}","bookId":"{id}","sellerId":"{id}","price":{price},"stock":1}}"#
            );
            let response = app
                .client
                .post(format!("{}/offer", app.address))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let problem = assert_problem(response, 422).await;
            assert_eq!(problem["field"], "price", "{price}");
            let detail = problem["detail"].as_str().unwrap();
            assert!(detail.contains(rule), "{price}: {detail}");
        }
    }

    async fn whole_counts_sent_as_floats_are_integers(app) {
        let (seller, book) = seller_and_book(app).await;
        let id = offer(app, book, seller, json!(10.5), json!(3.0)).await;
        let offers = app.get_json(&format!("/offers/{book}")).await;
        assert_eq!(offers[0]["stock"], json!(3));
        let order = Uuid::new_v4();
        write(app, "POST", "/order",
              json!({ "id": order, "userId": seller, "items": [{ "offerId": id, "quantity": 2.0 }] })).await;
        let settled = app.settled_order(order).await;
        assert_eq!(settled["status"], "confirmed");
        assert_eq!(settled["items"][0]["quantity"], json!(2));
    }

    async fn a_confirmed_two_item_order_shows_what_was_paid_and_keeps_it(app) {
        let (seller, book) = seller_and_book(app).await;
        let dear = offer(app, book, seller, json!(45.31927383), json!(9999)).await;
        let cheap = offer(app, book, seller, json!(7.5), json!(10)).await;
        let (buyer, order) = (seller, Uuid::new_v4());
        write(app, "POST", "/order", json!({ "id": order, "userId": buyer, "items": [
            { "offerId": dear, "quantity": 2 }, { "offerId": cheap, "quantity": 3 } ] })).await;
        let settled = app.settled_order(order).await;
        assert_eq!(settled["status"], "confirmed");
        let mut items = vec![
            json!({ "offerId": dear, "quantity": 2, "unitPrice": 45.32, "total": 90.64 }),
            json!({ "offerId": cheap, "quantity": 3, "unitPrice": 7.5, "total": 22.5 }),
        ];
        items.sort_by_key(|item| item["offerId"].as_str().unwrap().to_owned());
        assert_eq!(settled["items"], json!(items));
        assert_eq!(settled["total"], json!(113.14));

        // Another order claiming the same offers' stock changes neither the
        // first order's prices nor its totals.
        let later = Uuid::new_v4();
        write(app, "POST", "/order", json!({ "id": later, "userId": buyer, "items": [
            { "offerId": dear, "quantity": 9997 }, { "offerId": cheap, "quantity": 7 } ] })).await;
        let later = app.settled_order(later).await;
        assert_eq!(later["status"], "confirmed");
        assert_eq!(later["total"], json!(453_116.54));
        assert_eq!(app.get_json(&format!("/orders/{order}")).await, settled);
    }

    async fn a_rejected_order_charges_nothing(app) {
        let (seller, book) = seller_and_book(app).await;
        let id = offer(app, book, seller, json!(19.99), json!(1)).await;
        let order = Uuid::new_v4();
        write(app, "POST", "/order",
              json!({ "id": order, "userId": seller, "items": [{ "offerId": id, "quantity": 2 }] })).await;
        let settled = app.settled_order(order).await;
        assert_eq!(settled["status"], "rejected");
        assert_eq!(settled["total"], json!(0.0));
        assert_eq!(settled["items"],
                   json!([{ "offerId": id, "quantity": 2, "unitPrice": null, "total": null }]));
    }

    async fn the_openapi_document_states_the_price_bounds(app) {
        let doc = app.get_json("/openapi.json").await;
        let price = &doc["components"]["schemas"]["CreateOffer"]["properties"]["price"];
        assert_eq!(price["minimum"], json!(0.005), "{price}");
        assert_eq!(price["exclusiveMaximum"], json!(1_000_000_000.005), "{price}");
        let order = &doc["components"]["schemas"]["Order"]["properties"];
        assert!(order.get("total").is_some(), "{order}");
    }
}
