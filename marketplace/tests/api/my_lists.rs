//! A user's own lists: `GET /users/{id}/orders` (what it bought, and what
//! each order cost) and `GET /users/{id}/offers` (what it sells, and the
//! stock left), newest first, a page at a time by cursor; with
//! authentication on, only for the user itself.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use marketplace::config::BusKind;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{
    auth::Tokens,
    helpers::{assert_problem, header, spawn, TestApp, TestDb},
    on_every_bus,
};

/// `GET path` (a page of a list), expecting `200`: its body and its `Link`
/// header (empty when absent).
async fn page(app: &TestApp, path: &str) -> (Value, String) {
    let response = app.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    let link = header(&response, "link");
    (response.json().await.expect("a JSON page"), link)
}

/// The items of the first page of `path` (at most 100).
async fn items(app: &TestApp, path: &str) -> Vec<Value> {
    let (body, _) = page(app, &format!("{path}?limit=100")).await;
    assert_eq!(body["next"], Value::Null, "one page holds them all");
    body["items"].as_array().expect("items").clone()
}

/// The `id` of each row.
fn ids(rows: &[Value]) -> Vec<Uuid> {
    rows.iter()
        .map(|row| serde_json::from_value(row["id"].clone()).expect("an id"))
        .collect()
}

/// A row's `createdAt`.
fn created_at(row: &Value) -> DateTime<Utc> {
    let text = row["createdAt"].as_str().expect("createdAt");
    DateTime::parse_from_rfc3339(text)
        .expect("createdAt is RFC 3339")
        .with_timezone(&Utc)
}

/// `rows` in the order of a list read newest first: creation time, then
/// id, both descending.
fn newest_first(mut rows: Vec<Value>) -> Vec<Value> {
    rows.sort_by_key(|row| {
        let id: Uuid = serde_json::from_value(row["id"].clone()).expect("an id");
        std::cmp::Reverse((created_at(row), id))
    });
    rows
}

/// Saves a user and waits until it can be read.
async fn user(app: &TestApp, name: &str) -> Uuid {
    let id = Uuid::new_v4();
    assert_eq!(app.put_user(id, name).await.status(), 200);
    app.eventually(|| async {
        (app.get(&format!("/users/{id}")).await.status() == 200).then_some(())
    })
    .await;
    id
}

/// Orders `items` as `buyer` and waits until the order is settled.
async fn order(app: &TestApp, buyer: Uuid, items: &[(Uuid, i64)]) -> Value {
    let id = Uuid::new_v4();
    assert_eq!(app.post_order(id, buyer, items).await.status(), 200);
    app.settled_order(id).await
}

/// Follows a list from its first page of `limit` rows through the `Link`
/// header of each page: every row, in order, and the number of pages.
async fn walk(app: &TestApp, path: &str, limit: u32) -> (Vec<Value>, usize) {
    let (mut rows, mut pages) = (Vec::new(), 0);
    let mut next = Some(format!("{path}?limit={limit}"));
    while let Some(address) = next.take() {
        let (body, link) = page(app, &address).await;
        pages += 1;
        let items = body["items"].as_array().expect("items");
        assert!(items.len() <= limit as usize, "{address}: at most {limit}");
        rows.extend(items.iter().cloned());
        match body["next"].as_str() {
            Some(cursor) => {
                let expected = format!("{path}?limit={limit}&after={cursor}");
                assert_eq!(link, format!("<{expected}>; rel=\"next\""), "{address}");
                next = Some(expected);
            }
            None => assert_eq!(link, "", "{address}: the last page has no Link"),
        }
        assert!(pages <= 100, "{path}: the pages never end");
    }
    (rows, pages)
}

on_every_bus! {
    async fn a_users_orders_are_exactly_its_own_newest_first_with_what_each_cost(app) {
        let first = app.seed_offer(10.0, 5).await;
        let second = app.seed_offer(4.0, 1).await;
        let (ann, bob) = (user(app, "Ann").await, user(app, "Bob").await);

        let two_copies = order(app, ann, &[(first.offer, 2)]).await;
        let too_many = order(app, ann, &[(second.offer, 2)]).await;
        let bobs = order(app, bob, &[(first.offer, 1)]).await;
        let both = order(app, ann, &[(first.offer, 1), (second.offer, 1)]).await;

        assert_eq!(two_copies["status"], "confirmed");
        assert_eq!(
            two_copies["items"],
            json!([{ "offerId": first.offer, "quantity": 2, "unitPrice": 10.0, "total": 20.0 }])
        );
        assert_eq!(two_copies["total"], json!(20.0));
        assert_eq!(too_many["status"], "rejected");
        assert_eq!(too_many["total"], json!(0.0));
        assert_eq!(both["status"], "confirmed");
        assert_eq!(both["total"], json!(14.0));

        // Each order as GET /orders/{id} answers it, Ann's alone, newest first.
        let listed = items(app, &format!("/users/{ann}/orders")).await;
        let expected = newest_first(vec![two_copies.clone(), too_many.clone(), both.clone()]);
        assert_eq!(listed, expected);
        let listed_ids = ids(&listed);
        assert!(!listed_ids.contains(&serde_json::from_value(bobs["id"].clone()).unwrap()));
        let rejected = listed.iter().find(|o| o["status"] == "rejected").expect("the rejected order");
        assert_eq!(rejected["total"], json!(0.0));
        assert!(rejected["reason"].as_str().unwrap().contains(&second.offer.to_string()));

        assert_eq!(items(app, &format!("/users/{bob}/orders")).await, vec![bobs]);
        // A seller that bought nothing, and a user that does not exist.
        assert_eq!(items(app, &format!("/users/{}/orders", first.user)).await, Vec::<Value>::new());
        let (body, link) = page(app, &format!("/users/{}/orders", Uuid::new_v4())).await;
        assert_eq!(body, json!({ "items": [], "next": null }));
        assert_eq!(link, "");
    }

    async fn a_sellers_offers_are_exactly_its_own_with_the_stock_left(app) {
        let seeded = app.seed_offer(10.0, 3).await;
        let seller = seeded.user;
        let sold_out = Uuid::new_v4();
        assert_eq!(app.post_offer(sold_out, seeded.book, seller, 5.0, 1).await.status(), 200);
        app.await_listed(seeded.book, sold_out).await;
        let other = app.seed_offer(7.0, 2).await;
        let buyer = user(app, "Buyer").await;
        let bought = order(app, buyer, &[(seeded.offer, 2), (sold_out, 1)]).await;
        assert_eq!(bought["status"], "confirmed");

        let listed = items(app, &format!("/users/{seller}/offers")).await;
        assert_eq!(listed, newest_first(listed.clone()), "newest first");
        let by_id = |id: Uuid| listed.iter().find(|o| o["id"] == json!(id)).cloned().expect("listed");
        assert_eq!(ids(&listed).into_iter().collect::<HashSet<_>>(), HashSet::from([seeded.offer, sold_out]));
        let mut first = by_id(seeded.offer);
        assert!(first.as_object_mut().unwrap().remove("createdAt").is_some());
        assert_eq!(
            first,
            json!({ "id": seeded.offer, "bookId": seeded.book, "title": "Dune", "sellerId": seller,
                    "sellerName": "Seller", "price": 10.0, "stock": 1 })
        );
        // Sold out, and still listed.
        assert_eq!(by_id(sold_out)["stock"], 0);
        assert_eq!(by_id(sold_out)["price"], json!(5.0));

        assert_eq!(ids(&items(app, &format!("/users/{}/offers", other.user)).await), vec![other.offer]);
        assert_eq!(items(app, &format!("/users/{buyer}/offers")).await, Vec::<Value>::new());
        let (body, link) = page(app, &format!("/users/{}/offers", Uuid::new_v4())).await;
        assert_eq!(body, json!({ "items": [], "next": null }));
        assert_eq!(link, "");
    }

    async fn pages_follow_their_next_cursor_through_every_row_once(app) {
        let seeded = app.seed_offer(2.0, 50).await;
        let seller = seeded.user;
        let buyer = user(app, "Buyer").await;
        for _ in 0..5 {
            order(app, buyer, &[(seeded.offer, 1)]).await;
        }
        for price in [3.0, 4.0, 5.0, 6.0] {
            assert_eq!(app.post_offer(Uuid::new_v4(), seeded.book, seller, price, 1).await.status(), 200);
        }
        let offers = format!("/users/{seller}/offers");
        app.eventually(|| async {
            (page(app, &format!("{offers}?limit=100")).await.0["items"].as_array()?.len() == 5).then_some(())
        })
        .await;

        for path in [format!("/users/{buyer}/orders"), offers] {
            let all = items(app, &path).await;
            assert_eq!(all.len(), 5, "{path}");
            let (walked, pages) = walk(app, &path, 2).await;
            assert_eq!(pages, 3, "{path}: 2 + 2 + 1");
            assert_eq!(ids(&walked), ids(&all), "{path}: every row once, in order");
            assert_eq!(ids(&walked).into_iter().collect::<HashSet<_>>().len(), 5, "{path}: no repeats");
            let (exact, pages) = walk(app, &path, 5).await;
            assert_eq!((ids(&exact), pages), (ids(&all), 1), "{path}: a full last page announces no next");
            // The default page holds 20.
            let (body, _) = page(app, &path).await;
            assert_eq!(body["items"].as_array().unwrap().len(), 5);
        }
    }

    async fn a_bad_cursor_limit_or_id_is_a_problem(app) {
        let user = Uuid::new_v4();
        for list in ["orders", "offers"] {
            for after in ["not-a-cursor", "bm90IGpzb24", "W10", &"A".repeat(600)] {
                let path = format!("/users/{user}/{list}?after={after}");
                let problem = assert_problem(app.get(&path).await, 422).await;
                assert_eq!(problem["field"], "after", "{path}");
            }
            for limit in ["0", "101"] {
                let path = format!("/users/{user}/{list}?limit={limit}");
                let problem = assert_problem(app.get(&path).await, 422).await;
                assert_eq!(problem["field"], "limit", "{path}");
            }
            assert_problem(app.get(&format!("/users/{user}/{list}?limit=ten")).await, 400).await;
            assert_problem(app.get(&format!("/users/not-a-uuid/{list}")).await, 400).await;
        }
    }

    async fn the_lists_are_documented(app) {
        let doc = app.get_json("/openapi.json").await;
        for (path, item) in [("/users/{id}/orders", "Page_Order"), ("/users/{id}/offers", "Page_SellerOffer")] {
            let get = &doc["paths"][path]["get"];
            for status in ["200", "400", "401", "403", "422", "503"] {
                assert!(get["responses"][status].is_object(), "GET {path} documents {status}");
            }
            // Path and query (the edge adds the `If-None-Match` header to every GET).
            let names: Vec<&str> = get["parameters"].as_array().unwrap().iter().filter(|p| p["in"] != "header").filter_map(|p| p["name"].as_str()).collect();
            assert_eq!(names, ["id", "limit", "after"], "GET {path}");
            assert!(get["responses"]["200"]["headers"]["Link"].is_object(), "GET {path}: Link");
            assert!(doc["components"]["schemas"][item].is_object(), "{item}: {}", doc["components"]["schemas"]);
        }
    }
}

/// Runs `scenario` with authentication on (a random HS256 secret).
async fn signed_in<F, Fut>(db: TestDb, bus: BusKind, scenario: F)
where
    F: FnOnce(TestApp, Tokens) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    let tokens = Tokens::random();
    let app = spawn(db, bus, &["--auth-secret", &tokens.secret]).await;
    scenario(app, tokens).await.shutdown().await;
}

/// `GET path` as the user of `token` (none: anonymous).
async fn get_as(app: &TestApp, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = app
        .client
        .request(Method::GET, format!("{}{path}", app.address));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request sent")
}

/// `method path` with `body` as the user of `token`, expecting `200`.
async fn send_as(app: &TestApp, method: Method, path: &str, body: Value, token: &str) {
    let response = app
        .client
        .request(method.clone(), format!("{}{path}", app.address))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200, "{method} {path}");
}

mod with_authentication_on {
    use super::*;

    /// Ann sells, Bob buys: each reads its own list (`200`), the other's is
    /// `403`, and without a token `401`.
    async fn only_the_user_itself_reads_its_lists(db: TestDb, bus: BusKind) {
        signed_in(db, bus, |app, tokens| async move {
            let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
            let (as_ann, as_bob) = (tokens.of(ann), tokens.of(bob));
            let (book, offer, bought) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
            send_as(&app, Method::PUT, "/user", json!({ "id": ann, "name": "Ann" }), &as_ann).await;
            send_as(&app, Method::PUT, "/user", json!({ "id": bob, "name": "Bob" }), &as_bob).await;
            send_as(&app, Method::PUT, "/book", json!({ "id": book, "title": "Dune", "author": "Frank Herbert" }), &as_ann).await;
            for path in [format!("/users/{ann}"), format!("/users/{bob}"), format!("/books/{book}")] {
                app.eventually(|| async { (app.get(&path).await.status() == 200).then_some(()) }).await;
            }
            send_as(&app, Method::POST, "/offer", json!({ "id": offer, "bookId": book, "sellerId": ann, "price": 9.99, "stock": 3 }), &as_ann).await;
            app.await_listed(book, offer).await;
            send_as(&app, Method::POST, "/order", json!({ "id": bought, "userId": bob, "items": [{ "offerId": offer, "quantity": 2 }] }), &as_bob).await;

            let orders = format!("/users/{bob}/orders");
            let confirmed = app
                .eventually(|| async {
                    let response = get_as(&app, &orders, Some(&as_bob)).await;
                    assert_eq!(response.status(), 200, "the buyer reads its orders");
                    let page: Value = response.json().await.ok()?;
                    let order = page["items"].get(0)?.clone();
                    (order["status"] == "confirmed").then_some(order)
                })
                .await;
            assert_eq!((confirmed["id"].clone(), confirmed["total"].clone()), (json!(bought), json!(19.98)));
            let offers = format!("/users/{ann}/offers");
            let response = get_as(&app, &offers, Some(&as_ann)).await;
            assert_eq!(response.status(), 200, "the seller reads its offers");
            let page: Value = response.json().await.unwrap();
            assert_eq!((page["items"][0]["id"].clone(), page["items"][0]["stock"].clone()), (json!(offer), json!(1)));

            for (path, intruder) in [(&orders, &as_ann), (&offers, &as_bob)] {
                let problem = assert_problem(get_as(&app, path, Some(intruder)).await, 403).await;
                assert_eq!(problem["type"], "/problems/forbidden", "GET {path}");
                let response = get_as(&app, path, None).await;
                assert_eq!(header(&response, "www-authenticate"), r#"Bearer realm="marketplace""#);
                let problem = assert_problem(response, 401).await;
                assert_eq!(problem["type"], "/problems/unauthorized", "GET {path}");
            }
            app
        })
        .await
    }

    mod only_the_user_itself_reads_its_lists {
        use super::*;

        async fn run(db: TestDb, bus: BusKind) {
            only_the_user_itself_reads_its_lists(db, bus).await
        }

        crate::tests_on_every_bus!(run);
    }
}
