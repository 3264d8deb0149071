//! `--read-database-url`: the GET routes that may lag read a PostgreSQL
//! streaming replica, `GET /orders/{id}` and every write stay on the
//! primary.
//!
//! The streaming test is opt-in (`--ignored`): it needs a primary and its
//! replica, e.g. from `deploy/local-postgres-replica.sh start`, named by
//! `MARKETPLACE_TEST_PRIMARY_URL` and `MARKETPLACE_TEST_REPLICA_URL`
//! (server URLs without a database: the test creates its own).

use std::{future::Future, time::Duration};

use marketplace::{config::ServeConfig, startup::App, store::Database};
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::helpers::{init_logging, logged, Running};

/// How long replication or an event may take to show a write.
const PATIENCE: Duration = Duration::from_secs(30);

impl Running {
    /// Polls `GET path` until `accept` holds for its answer.
    async fn await_get(&self, path: &str, accept: impl Fn(u16, &Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (status, body) = self.get(path).await;
            if accept(status, &body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "GET {path} never showed the write: {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether `check` holds within [`PATIENCE`], polled every 20 ms.
async fn eventually<F, Fut>(mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `marketplace serve` on the in-memory bus (a write is applied before its
/// `200`), the database on `primary` and the reads on `replica`.
fn serve_config(primary: &str, replica: &str) -> ServeConfig {
    ServeConfig::from_args([
        "--bus",
        "in-memory",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        primary,
        "--read-database-url",
        replica,
        "--db-max-connections",
        "4",
    ])
    .expect("valid flags")
}

fn server_url(variable: &str) -> String {
    std::env::var(variable)
        .unwrap_or_else(|_| {
            panic!("{variable} names the server (deploy/local-postgres-replica.sh)")
        })
        .trim_end_matches('/')
        .to_owned()
}

#[tokio::test]
#[ignore = "needs a PostgreSQL primary and its streaming replica (deploy/local-postgres-replica.sh)"]
async fn reads_come_from_the_replica_and_an_order_from_the_primary_at_once() {
    init_logging();
    let primary = server_url("MARKETPLACE_TEST_PRIMARY_URL");
    let replica = server_url("MARKETPLACE_TEST_REPLICA_URL");
    let name = format!("replica_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&format!("{primary}/postgres"))
        .await
        .expect("the primary answers");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("database created on the primary");

    let app = App::build(&serve_config(
        &format!("{primary}/{name}"),
        &format!("{replica}/{name}"),
    ))
    .await
    .expect("the API starts with a read replica");
    // The database and its schema reach the replica by replication.
    let replica_url = format!("{replica}/{name}");
    let replicated = eventually(|| async {
        match PgConnection::connect(&replica_url).await {
            Ok(mut connection) => sqlx::query("SELECT count(*) FROM orders")
                .execute(&mut connection)
                .await
                .is_ok(),
            Err(_) => false,
        }
    })
    .await;
    assert!(
        replicated,
        "the migrated database never reached the replica"
    );
    let api = Running::start(app);
    let (status, _) = api.get("/health/ready").await;
    assert_eq!(status, 200, "ready with the replica up");

    // The mobile flow: each read eventually shows the write before it.
    let (user, book, offer, order) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    assert_eq!(
        api.send(Method::PUT, "/user", json!({"id": user, "name": "Ann"}))
            .await,
        200
    );
    api.await_get(&format!("/users/{user}"), |status, body| {
        status == 200 && body["name"] == json!("Ann")
    })
    .await;
    assert_eq!(
        api.send(
            Method::PUT,
            "/book",
            json!({"id": book, "title": "Dune", "author": "Frank Herbert"})
        )
        .await,
        200
    );
    api.await_get(&format!("/books/{book}"), |status, body| {
        status == 200 && body["title"] == json!("Dune")
    })
    .await;
    assert_eq!(
        api.send(
            Method::POST,
            "/offer",
            json!({"id": offer, "bookId": book, "sellerId": user, "price": 12.5, "stock": 3})
        )
        .await,
        200
    );
    api.await_get(&format!("/offers/{book}"), |status, body| {
        status == 200 && body.to_string().contains(&offer.to_string())
    })
    .await;
    api.await_get("/books", |status, body| {
        status == 200 && body.to_string().contains(&book.to_string())
    })
    .await;
    api.await_get(&format!("/users/{user}/offers"), |status, body| {
        status == 200 && body.to_string().contains(&offer.to_string())
    })
    .await;
    assert_eq!(
        api.send(
            Method::POST,
            "/order",
            json!({"id": order, "userId": user, "items": [{"offerId": offer, "quantity": 1}]})
        )
        .await,
        200
    );
    // Applied before its 200, and read from the primary: there at once.
    let (status, placed) = api.get(&format!("/orders/{order}")).await;
    assert_eq!(
        (status, placed["status"].as_str()),
        (200, Some("confirmed")),
        "{placed}"
    );
    api.await_get(&format!("/users/{user}/orders"), |status, body| {
        status == 200 && body.to_string().contains(&order.to_string())
    })
    .await;
    api.await_get(&format!("/books/{book}"), |status, body| {
        status == 200 && body["offerId"] == json!(offer) && body["stock"] == json!(2)
    })
    .await;

    // Those reads were served by the replica: the API holds connections
    // to the database there.
    let mut on_replica = PgConnection::connect(&format!("{replica}/postgres"))
        .await
        .expect("the replica answers");
    let connections: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut on_replica)
            .await
            .expect("replica activity");
    assert!(connections > 0, "no connection of the API on the replica");

    api.stop().await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .expect("database dropped");
}

#[tokio::test]
async fn a_read_replica_is_refused_on_sqlite() {
    let config = ServeConfig::from_args([
        "--bus",
        "in-memory",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        "sqlite::memory:",
        "--read-database-url",
        "postgres://postgres@127.0.0.1:1/replica",
    ])
    .expect("valid flags");
    let error = match App::build(&config).await {
        Ok(_) => panic!("a read replica on SQLite must be refused"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("--read-database-url"), "{error}");
    assert!(error.contains("needs PostgreSQL"), "{error}");
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn a_replica_away_makes_the_api_unready_and_says_why(pool: PgPool) {
    init_logging();
    // Nothing listens on port 1: the replica is away.
    let config = serve_config(
        "postgres://unused",
        "postgres://postgres@127.0.0.1:1/replica",
    );
    let app = App::build_with_database(&config, Database::Postgres(pool))
        .await
        .expect("the API starts while its replica is away");
    let api = Running::start(app);
    let (status, body) = api.get("/health/ready").await;
    assert_eq!(status, 503, "{body}");
    // The reason is in the log line of the answer.
    let reasons: Vec<String> = logged("request not accepted", &[("uri", "/health/ready")])
        .into_iter()
        .filter_map(|line| line.fields.get("error").cloned())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|reason| reason.contains("read replica:")),
        "{reasons:?}"
    );
    api.stop().await;
}
