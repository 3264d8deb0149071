use serde_json::json;
use uuid::Uuid;

use crate::{helpers::assert_problem, on_every_bus};

on_every_bus! {
    async fn an_order_with_stock_is_confirmed_and_claims_it(app) {
        let seeded = app.seed_offer(10.0, 3).await;
        let (buyer, order) = (seeded.user, Uuid::new_v4());
        assert_eq!(app.post_order(order, buyer, &[(seeded.offer, 2)]).await.status(), 200);
        let settled = app.settled_order(order).await;
        assert_eq!(settled["status"], "confirmed");
        assert_eq!(settled["reason"], json!(null));
        assert_eq!(settled["userId"], json!(buyer));
        assert_eq!(
            settled["items"],
            json!([{ "offerId": seeded.offer, "quantity": 2, "unitPrice": 10.0, "total": 20.0 }])
        );
        assert_eq!(settled["total"], json!(20.0));
        app.eventually(|| async {
            (app.get_json(&format!("/books/{}", seeded.book)).await["stock"] == 1).then_some(())
        })
        .await;
        assert_eq!(app.get_json(&format!("/offers/{}", seeded.book)).await[0]["stock"], 1);
    }

    async fn an_order_beyond_stock_is_rejected_and_claims_nothing(app) {
        let first = app.seed_offer(10.0, 5).await;
        let second = app.seed_offer(4.0, 1).await;
        let order = Uuid::new_v4();
        app.post_order(order, first.user, &[(first.offer, 2), (second.offer, 2)]).await;
        let settled = app.settled_order(order).await;
        assert_eq!(settled["status"], "rejected");
        let reason = settled["reason"].as_str().unwrap();
        assert!(reason.contains(&second.offer.to_string()), "{reason}");
        // All or nothing: the first item's stock was not claimed either.
        assert_eq!(app.get_json(&format!("/offers/{}", first.book)).await[0]["stock"], 5);
        assert_eq!(app.get_json(&format!("/offers/{}", second.book)).await[0]["stock"], 1);
    }

    async fn selling_out_the_cheapest_offer_moves_the_book_to_the_next(app) {
        let seeded = app.seed_offer(3.0, 1).await;
        let dearer = Uuid::new_v4();
        app.post_offer(dearer, seeded.book, seeded.user, 8.0, 4).await;
        app.eventually(|| async {
            (app.get_json(&format!("/offers/{}", seeded.book)).await.as_array()?.len() == 2).then_some(())
        })
        .await;
        let order = Uuid::new_v4();
        app.post_order(order, seeded.user, &[(seeded.offer, 1)]).await;
        assert_eq!(app.settled_order(order).await["status"], "confirmed");
        let book = app.await_listed(seeded.book, dearer).await;
        assert_eq!((book["price"].clone(), book["stock"].clone()), (json!(8.0), json!(4)));
    }

    async fn selling_out_the_last_offer_leaves_the_book_without_one(app) {
        let seeded = app.seed_offer(3.0, 2).await;
        let order = Uuid::new_v4();
        app.post_order(order, seeded.user, &[(seeded.offer, 2)]).await;
        assert_eq!(app.settled_order(order).await["status"], "confirmed");
        let book = app
            .eventually(|| async {
                let book = app.get_json(&format!("/books/{}", seeded.book)).await;
                book["offerId"].is_null().then_some(book)
            })
            .await;
        assert_eq!((book["price"].clone(), book["stock"].clone()), (json!(0.0), json!(0)));
    }

    async fn items_naming_the_same_offer_are_added_up(app) {
        let seeded = app.seed_offer(1.0, 3).await;
        let order = Uuid::new_v4();
        app.post_order(order, seeded.user, &[(seeded.offer, 1), (seeded.offer, 2)]).await;
        let settled = app.settled_order(order).await;
        assert_eq!(settled["status"], "confirmed");
        assert_eq!(
            settled["items"],
            json!([{ "offerId": seeded.offer, "quantity": 3, "unitPrice": 1.0, "total": 3.0 }])
        );
        assert_eq!(app.get_json(&format!("/offers/{}", seeded.book)).await[0]["stock"], 0);
    }

    async fn an_order_from_a_buyer_that_never_exists_is_rejected_with_a_reason_and_claims_nothing(app) {
        let seeded = app.seed_offer(10.0, 3).await;
        let (order, stranger) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(app.post_order(order, stranger, &[(seeded.offer, 1)]).await.status(), 200);
        let settled = app.settled_order(order).await;
        assert_eq!(settled["status"], "rejected", "{settled}");
        assert_eq!(settled["reason"], json!(format!("buyer {stranger} does not exist")));
        assert_eq!(settled["total"], json!(0.0));
        assert_eq!(app.get_json(&format!("/offers/{}", seeded.book)).await[0]["stock"], 3);
        assert_eq!(app.dead_letter_count().await, 0);
    }

    async fn an_unknown_order_is_404(app) {
        assert_problem(app.get(&format!("/orders/{}", Uuid::new_v4())).await, 404).await;
    }
}

mod an_order_for_an_offer_that_never_appears {
    use super::*;
    use crate::helpers::spawn_app_with;
    use marketplace::config::BusKind;

    /// The order waits `pending` through the retries (the offer may be on
    /// its way), then is rejected with a reason rather than lost.
    #[sqlx::test(migrator = "marketplace::MIGRATOR")]
    async fn is_rejected_once_retries_are_spent(pool: sqlx::PgPool) {
        let app =
            spawn_app_with(pool, BusKind::InMemoryAsync, &["--retry-max-attempts", "3"]).await;
        let (order, offer, buyer) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        app.put_user(buyer, "Buyer").await;
        app.eventually(|| async {
            (app.get(&format!("/users/{buyer}")).await.status() == 200).then_some(())
        })
        .await;
        app.post_order(order, buyer, &[(offer, 1)]).await;
        let settled = app.settled_order(order).await;
        assert_eq!(settled["status"], "rejected");
        assert!(settled["reason"]
            .as_str()
            .unwrap()
            .contains(&offer.to_string()));
    }

    /// An order overtaking its buyer (commands travel on different queues)
    /// waits `pending` for it, and is confirmed once the buyer is saved.
    #[sqlx::test(migrator = "marketplace::MIGRATOR")]
    async fn sent_before_its_buyer_is_confirmed_once_the_buyer_arrives(pool: sqlx::PgPool) {
        let app = spawn_app_with(
            pool,
            BusKind::InMemoryAsync,
            &["--retry-max-attempts", "30", "--retry-max-backoff", "200ms"],
        )
        .await;
        let seeded = app.seed_offer(10.0, 3).await;
        let (order, buyer) = (Uuid::new_v4(), Uuid::new_v4());
        app.post_order(order, buyer, &[(seeded.offer, 1)]).await;
        let pending = app
            .eventually(|| async {
                let response = app.get(&format!("/orders/{order}")).await;
                (response.status() == 200)
                    .then_some(response.json::<serde_json::Value>().await.ok()?)
            })
            .await;
        assert_eq!(pending["status"], "pending");
        app.put_user(buyer, "Late buyer").await;
        assert_eq!(app.settled_order(order).await["status"], "confirmed");
    }
}
