//! `marketplace dead-letters`: an offer whose book never came is given up
//! on, listed with its reason, shown, left alone by dry runs, and applied
//! exactly once when replayed after its book exists; on RabbitMQ's `.dlq`
//! queues and on the `bus_dead_letters` table of the async and durable
//! buses.

use bus_core::dead_letter_ops::DeadLetterSelector;
use bus_rabbitmq::{DeadLetterQueues, RabbitConfig};
use marketplace::{
    config::{BusKind, DeadLetterAction},
    operations, startup,
};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{logged, spawn_app_with, TestApp};

/// Runs `marketplace dead-letters ARGS` and returns what it printed.
async fn dead_letters(args: &[&str]) -> String {
    let action = DeadLetterAction::from_args(args)
        .unwrap_or_else(|error| panic!("dead-letters {args:?}: {error}"));
    let mut out = Vec::new();
    operations::dead_letters::run(&action, &mut out)
        .await
        .unwrap_or_else(|error| panic!("dead-letters {args:?}: {error:#}"));
    String::from_utf8(out).expect("UTF-8 output")
}

/// Two attempts, so that the offer is given up on at once.
const FEW_RETRIES: &[&str] = &["--retry-max-attempts", "2"];

/// An offer for a book that does not exist, sent by a seller that does.
async fn offer_for_a_missing_book(app: &TestApp) -> (Uuid, Uuid) {
    let (seller, book, offer) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    assert_eq!(app.put_user(seller, "Seller").await.status(), 200);
    app.eventually(|| async {
        (app.get(&format!("/users/{seller}")).await.status() == 200).then_some(())
    })
    .await;
    assert_eq!(
        app.post_offer(offer, book, seller, 7.5, 3).await.status(),
        200
    );
    (book, offer)
}

/// Creates the book and waits until it can be read.
async fn create_book(app: &TestApp, book: Uuid) {
    assert_eq!(app.put_book(book, "Late book").await.status(), 200);
    app.eventually(|| async {
        (app.get(&format!("/books/{book}")).await.status() == 200).then_some(())
    })
    .await;
}

/// Waits until the offer is listed for its book, then checks it is there
/// once, with its stock.
async fn assert_offer_applied_once(app: &TestApp, book: Uuid, offer: Uuid) {
    let offers: Value = app
        .eventually(|| async {
            let offers = app.get_json(&format!("/offers/{book}")).await;
            (offers.as_array().is_some_and(|offers| !offers.is_empty())).then_some(offers)
        })
        .await;
    assert_eq!(offers.as_array().map(Vec::len), Some(1), "{offers}");
    assert_eq!(offers[0]["id"], json!(offer));
    assert_eq!(offers[0]["stock"], 3);
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn a_dead_lettered_offer_is_listed_shown_and_replayed_once_from_its_rabbitmq_dlq(
    pool: PgPool,
) {
    let app = spawn_app_with(pool, BusKind::Rabbitmq, FEW_RETRIES).await;
    let (book, offer) = offer_for_a_missing_book(&app).await;
    app.eventually(|| async { (app.dead_letter_count().await == 1).then_some(()) })
        .await;
    let ns = app.namespace.as_str();
    let queue = format!("{ns}.command.marketplace.CreateOffer");
    let reason = format!("book {book} does not exist (yet)");
    let store = ["--bus", "rabbitmq", "--namespace", ns];

    let listed = dead_letters(&[&["list", "--group-by", "reason"], &store[..]].concat()).await;
    let line = listed
        .lines()
        .find(|line| line.contains(&queue))
        .unwrap_or_else(|| panic!("{queue} listed:\n{listed}"));
    assert!(line.starts_with("1 "), "{listed}");
    assert!(line.ends_with(&reason), "{listed}");
    // Listing read the queue and gave everything back.
    assert_eq!(app.dead_letter_count().await, 1);

    let rabbit = RabbitConfig {
        namespace: ns.to_owned(),
        ..RabbitConfig::default()
    };
    let topology = startup::rabbit_topology(&rabbit).expect("topology");
    let parked = DeadLetterQueues::new(&rabbit, &topology)
        .find(&DeadLetterSelector::default())
        .await
        .expect("dead letters read");
    assert_eq!(parked.len(), 1, "{parked:?}");
    let id = parked[0].message_id.expect("a message id").to_string();
    let shown: Value =
        serde_json::from_str(&dead_letters(&[&["show", &id], &store[..]].concat()).await)
            .expect("JSON");
    assert_eq!(shown[0]["reason"], json!(reason));
    assert_eq!(shown[0]["attempts"], 2);
    assert_eq!(shown[0]["queue"], json!(queue));
    assert_eq!(shown[0]["payload"]["id"], json!(offer));
    assert!(shown[0]["first_failed_at"].is_string(), "{shown}");
    assert!(shown[0]["dead_lettered_at"].is_string(), "{shown}");

    // Dry runs change nothing.
    let dry = dead_letters(&[&["purge", "--all", "--dry-run"], &store[..]].concat()).await;
    assert!(
        dry.starts_with("dry run: would purge 1 dead letter(s)"),
        "{dry}"
    );
    let unconfirmed = dead_letters(&[&["purge", "--queue", &queue], &store[..]].concat()).await;
    assert!(
        unconfirmed.starts_with("dry run (add --yes to purge): would purge 1"),
        "{unconfirmed}"
    );
    let dlq = format!("{queue}.dlq");
    let dry = dead_letters(&[&["replay", "--queue", &dlq, "--dry-run"], &store[..]].concat()).await;
    assert!(dry.starts_with("dry run: would replay 1"), "{dry}");
    assert_eq!(app.dead_letter_count().await, 1);

    create_book(&app, book).await;
    let replayed =
        dead_letters(&[&["replay", "--id", &id, "--actor", "ops-test"], &store[..]].concat()).await;
    assert!(
        replayed.starts_with("replayed 1 dead letter(s)"),
        "{replayed}"
    );
    assert_offer_applied_once(&app, book, offer).await;
    assert_eq!(app.dead_letter_count().await, 0, "the .dlq is empty");
    assert_eq!(
        dead_letters(&[&["list"], &store[..]].concat()).await.trim(),
        "no dead letters"
    );
    let audit = logged("dead letters replayed", &[("actor", "ops-test")]);
    assert!(
        audit.iter().any(
            |line| line.fields.get("count").map(String::as_str) == Some("1")
                && line.fields.get("dry_run").map(String::as_str) == Some("false")
        ),
        "{audit:?}"
    );
    app.shutdown().await;
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn a_dead_lettered_offer_is_listed_shown_and_replayed_once_from_the_database(pool: PgPool) {
    listed_shown_and_replayed_from_the_database(pool, BusKind::InMemoryAsync, "in-memory-async")
        .await;
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn a_dead_lettered_offer_of_the_durable_bus_is_listed_shown_and_replayed_once(pool: PgPool) {
    listed_shown_and_replayed_from_the_database(pool, BusKind::Durable, "durable").await;
}

/// The `bus_dead_letters` table of a bus that keeps its dead letters in
/// the database (`bus`, named `flag` on the command line).
async fn listed_shown_and_replayed_from_the_database(pool: PgPool, bus: BusKind, flag: &str) {
    let options = pool.connect_options();
    let url = format!(
        "postgres://{}@{}:{}/{}",
        options.get_username(),
        options.get_host(),
        options.get_port(),
        options.get_database().expect("a test database")
    );
    let app = spawn_app_with(pool.clone(), bus, FEW_RETRIES).await;
    let (book, offer) = offer_for_a_missing_book(&app).await;
    let stored = "SELECT count(*) FROM bus_dead_letters";
    app.eventually(|| async { (app.count(stored).await == 1).then_some(()) })
        .await;
    let queue = "command.marketplace.CreateOffer";
    let reason = format!("book {book} does not exist (yet)");
    let store = ["--bus", flag, "--database-url", url.as_str()];

    let listed =
        dead_letters(&[&["list", "--group-by", "reason", "--json"], &store[..]].concat()).await;
    let groups: Value = serde_json::from_str(&listed).expect("JSON");
    assert_eq!(groups.as_array().map(Vec::len), Some(1), "{groups}");
    assert_eq!(groups[0]["queue"], queue);
    assert_eq!(groups[0]["reason"], json!(reason));
    assert_eq!(groups[0]["count"], 1);
    assert!(groups[0]["oldest"].is_string(), "{groups}");

    let id: Uuid = sqlx::query_scalar("SELECT message_id FROM bus_dead_letters")
        .fetch_one(&pool)
        .await
        .expect("dead letter");
    let id = id.to_string();
    let shown: Value =
        serde_json::from_str(&dead_letters(&[&["show", &id], &store[..]].concat()).await)
            .expect("JSON");
    assert_eq!(shown[0]["reason"], json!(reason));
    assert_eq!(shown[0]["attempts"], 2);
    assert_eq!(shown[0]["payload"]["id"], json!(offer));

    let dry = dead_letters(
        &[
            &["purge", "--reason", "does not exist", "--dry-run"],
            &store[..],
        ]
        .concat(),
    )
    .await;
    assert!(dry.starts_with("dry run: would purge 1"), "{dry}");
    let dry = dead_letters(&[&["replay", "--all", "--dry-run"], &store[..]].concat()).await;
    assert!(dry.starts_with("dry run: would replay 1"), "{dry}");
    assert_eq!(app.count(stored).await, 1);

    create_book(&app, book).await;
    let replayed = dead_letters(
        &[
            &["replay", "--reason", "does not exist", "--queue", queue],
            &store[..],
        ]
        .concat(),
    )
    .await;
    assert!(
        replayed.starts_with("replayed 1 dead letter(s)"),
        "{replayed}"
    );
    assert_eq!(app.count(stored).await, 0, "row deleted with the replay");
    assert_offer_applied_once(&app, book, offer).await;
    assert_eq!(
        dead_letters(&[&["list"], &store[..]].concat()).await.trim(),
        "no dead letters"
    );
    assert_eq!(app.count(stored).await, 0, "not dead-lettered again");
    app.shutdown().await;
}
