//! Behaviour specific to the RabbitMQ bus (the rest of the suite runs on it
//! too, through `on_every_bus!`).

use bus_core::{CommandBus, Envelope};
use bus_rabbitmq::{RabbitConfig, RabbitPublisher, Topology};
use marketplace::{
    commands::{CreateOrder, OrderItem, SaveUser},
    config::BusKind,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{assert_problem, logged, spawn_app, spawn_app_with};

/// Commands travel on different queues: an offer may overtake its book and
/// seller. It is retried through the delay queues until they exist.
#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn an_offer_sent_before_its_book_and_seller_is_listed_once_they_arrive(pool: PgPool) {
    let app = spawn_app(pool, BusKind::Rabbitmq).await;
    let (book, seller, offer) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(
        app.post_offer(offer, book, seller, 5.0, 2).await.status(),
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    app.put_book(book, "Late book").await;
    app.put_user(seller, "Late seller").await;
    let listed = app.await_listed(book, offer).await;
    assert_eq!(listed["stock"], 2);
    app.shutdown().await;
}

/// A worker that dies between its commit and its ack gets the same message
/// again: applying it again must change nothing.
#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn a_redelivered_order_claims_stock_only_once(pool: PgPool) {
    let app = spawn_app(pool, BusKind::Rabbitmq).await;
    let seeded = app.seed_offer(10.0, 5).await;
    let order = CreateOrder {
        id: Uuid::new_v4(),
        user_id: seeded.user,
        items: vec![OrderItem {
            offer_id: seeded.offer,
            quantity: 2,
        }],
    };
    let envelope = Envelope::new(&order).unwrap();
    let trace = envelope
        .trace_context()
        .expect("a new envelope has a trace");
    let config = RabbitConfig {
        namespace: app.namespace.clone(),
        ..RabbitConfig::default()
    };
    let publisher = RabbitPublisher::connect(&config, Topology::new(app.namespace.clone()))
        .await
        .unwrap();
    // The very same message (same id) twice, as a redelivery would.
    publisher.send_envelope(envelope.clone()).await.unwrap();
    publisher.send_envelope(envelope).await.unwrap();
    publisher.close();
    app.await_commands_applied(&trace, 2).await;
    assert_eq!(
        logged(
            "order already applied",
            &[("order_id", &order.id.to_string())]
        )
        .len(),
        1,
        "the handler saw the second delivery as already applied"
    );
    assert_eq!(app.settled_order(order.id).await["status"], "confirmed");
    assert_eq!(
        app.get_json(&format!("/offers/{}", seeded.book)).await[0]["stock"],
        3
    );
    assert_eq!(app.dead_letter_count().await, 0);
    app.shutdown().await;
}

/// With the broker unreachable a write is never answered 200: it fails fast
/// with 503 and problem+json, and readiness says why.
#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn writes_answer_503_when_the_broker_is_unreachable(pool: PgPool) {
    let app = spawn_app_api_only(pool).await;
    let started = std::time::Instant::now();
    let problem = assert_problem(app.put_user(Uuid::new_v4(), "Ann").await, 503).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "answered in bounded time"
    );
    assert!(
        problem["detail"].as_str().unwrap().contains("unavailable"),
        "{problem}"
    );
    assert_problem(app.get("/health/ready").await, 503).await;
    // Reads do not need the broker.
    assert_eq!(app.get("/books").await.status(), 200);
}

async fn spawn_app_api_only(pool: PgPool) -> crate::helpers::TestApp {
    spawn_app_with(
        pool,
        BusKind::InMemoryAsync,
        &[
            "--bus",
            "rabbitmq",
            "--amqp-url",
            "amqp://guest:guest@127.0.0.1:1/%2f",
            "--confirm-timeout",
            "2s",
        ],
    )
    .await
}

/// A publisher of commands straight onto the test's broker namespace,
/// bypassing the HTTP edge and its validation.
async fn forger(app: &crate::helpers::TestApp) -> RabbitPublisher {
    let config = RabbitConfig {
        namespace: app.namespace.clone(),
        ..RabbitConfig::default()
    };
    RabbitPublisher::connect(&config, Topology::new(app.namespace.clone()))
        .await
        .unwrap()
}

/// Anyone holding broker credentials can publish a command: the consumer
/// validates it again and dead-letters an invalid one with the validation
/// error as its reason, without applying it.
#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn a_command_forged_on_the_broker_with_an_invalid_field_is_dead_lettered_with_its_reason_and_never_applied(
    pool: PgPool,
) {
    let app = spawn_app(pool, BusKind::Rabbitmq).await;
    let seeded = app.seed_offer(10.0, 5).await;
    let publisher = forger(&app).await;
    let order = CreateOrder {
        id: Uuid::new_v4(),
        user_id: seeded.user,
        items: vec![OrderItem {
            offer_id: seeded.offer,
            quantity: 0,
        }],
    };
    publisher
        .send_envelope(Envelope::new(&order).unwrap())
        .await
        .unwrap();
    // 10 MB of name: the largest the broker takes by default is 16 MiB.
    let user = SaveUser {
        id: Uuid::new_v4(),
        name: "x".repeat(10 * 1024 * 1024),
    };
    publisher
        .send_envelope(Envelope::new(&user).unwrap())
        .await
        .unwrap();
    publisher.close();

    // Counted first (cheap), read once: each read fetches the 10 MB copy.
    app.eventually(|| async { (app.dead_letter_count().await >= 2).then_some(()) })
        .await;
    let reasons = app.dead_letter_reasons().await;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().any(|reason| reason
            == "invalid marketplace.CreateOrder: items[0].quantity: must be between 1 and 1000000"),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|reason| reason
            == "invalid marketplace.SaveUser: name: length must be between 1 and 50"),
        "{reasons:?}"
    );
    assert_problem(app.get(&format!("/orders/{}", order.id)).await, 404).await;
    assert_problem(app.get(&format!("/users/{}", user.id)).await, 404).await;
    assert_eq!(
        app.get_json(&format!("/offers/{}", seeded.book)).await[0]["stock"],
        5
    );
    app.shutdown().await;
}
