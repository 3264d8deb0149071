//! Concurrent buyers can never oversell.

use futures::future::join_all;
use uuid::Uuid;

use crate::on_every_bus;

on_every_bus! {
    async fn two_hundred_concurrent_orders_for_ten_copies_confirm_exactly_ten(app) {
        let seeded = app.seed_offer(10.0, 10).await;
        let orders: Vec<Uuid> = (0..200).map(|_| Uuid::new_v4()).collect();
        let (offer, buyer) = (seeded.offer, seeded.user);
        let answers = join_all(
            orders.iter().map(|&order| async move { app.post_order(order, buyer, &[(offer, 1)]).await }),
        )
        .await;
        assert!(answers.iter().all(|r| r.status() == 200));
        let mut confirmed = 0;
        for &order in &orders {
            match app.settled_order(order).await["status"].as_str() {
                Some("confirmed") => confirmed += 1,
                Some("rejected") => {}
                other => panic!("unexpected status {other:?}"),
            }
        }
        assert_eq!(confirmed, 10);
        assert_eq!(app.get_json(&format!("/offers/{}", seeded.book)).await[0]["stock"], 0);
        let claimed = app
            .count(
                "SELECT COALESCE(sum(i.quantity), 0) FROM order_items i JOIN orders o ON o.id = i.order_id
                 WHERE o.status = 'confirmed'",
            )
            .await;
        assert_eq!(claimed, 10);
        app.eventually(|| async {
            app.get_json(&format!("/books/{}", seeded.book)).await["offerId"].is_null().then_some(())
        })
        .await;
    }
}
