//! Which database the binary runs on: an SQLite file by default, with no
//! service to install; PostgreSQL when `DATABASE_URL` says so; and the
//! RabbitMQ bus refused, with the reason, on SQLite.

use std::{net::TcpListener, process::Stdio, time::Duration};

use serde_json::json;
use tokio::{io::AsyncReadExt, process::Command};
use uuid::Uuid;

/// A scratch working directory, removed at the end.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new() -> Self {
        let path =
            std::env::temp_dir().join(format!("marketplace-cwd-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The binary with no configuration at all: no DATABASE_URL, no bus, no
/// flag but the port.
fn marketplace(cwd: &ScratchDir) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_marketplace"));
    command
        .current_dir(&cwd.0)
        .env_remove("DATABASE_URL")
        .env_remove("MARKETPLACE_BUS")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn with_no_configuration_the_api_runs_on_an_sqlite_file_and_says_so() {
    let cwd = ScratchDir::new();
    let port = free_port();
    let mut child = marketplace(&cwd)
        .env("MARKETPLACE_LISTEN", format!("127.0.0.1:{port}"))
        .spawn()
        .expect("marketplace starts");
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await {
            if r.status() == 200 {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the API answers /health/ready");

    // The mobile flow, on the embedded database.
    let (user, book, offer, order) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    let put = |path: &str, body: serde_json::Value| {
        client.put(format!("{base}{path}")).json(&body).send()
    };
    let post = |path: &str, body: serde_json::Value| {
        client.post(format!("{base}{path}")).json(&body).send()
    };
    assert_eq!(
        put("/user", json!({ "id": user, "name": "Ann" }))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        put(
            "/book",
            json!({ "id": book, "title": "Dune", "author": "Frank Herbert" })
        )
        .await
        .unwrap()
        .status(),
        200
    );
    assert_eq!(
        post(
            "/offer",
            json!({ "id": offer, "bookId": book, "sellerId": user, "price": 12.5, "stock": 3 })
        )
        .await
        .unwrap()
        .status(),
        200
    );
    let mut listed = serde_json::Value::Null;
    for _ in 0..100 {
        listed = client
            .get(format!("{base}/books/{book}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        if listed["offerId"] == json!(offer) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(listed["price"], json!(12.5));
    assert_eq!(
        post(
            "/order",
            json!({ "id": order, "userId": user, "items": [{ "offerId": offer, "quantity": 1 }] })
        )
        .await
        .unwrap()
        .status(),
        200
    );
    let mut status = serde_json::Value::Null;
    for _ in 0..100 {
        let r = client
            .get(format!("{base}/orders/{order}"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            status = r.json::<serde_json::Value>().await.unwrap()["status"].clone();
            if status != "pending" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, "confirmed");
    assert!(
        cwd.0.join("marketplace.db").exists(),
        "the database is a file in the working directory"
    );

    child.start_kill().unwrap();
    let mut logs = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    let _ = child.wait().await;
    assert!(
        logs.contains("storage: embedded SQLite database marketplace.db"),
        "{logs}"
    );
    assert!(
        logs.contains("bus: durable (commands committed to the database"),
        "{logs}"
    );
    assert!(!logs.contains("a crash loses"), "{logs}");
}

async fn refused(args: &[&str]) -> String {
    let cwd = ScratchDir::new();
    let output = marketplace(&cwd)
        .args(args)
        .env("MARKETPLACE_LISTEN", "127.0.0.1:0")
        .env("MARKETPLACE_HEALTH_LISTEN", "127.0.0.1:0")
        .output()
        .await
        .expect("marketplace runs");
    assert!(!output.status.success(), "{args:?} must be refused");
    String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout)
}

#[tokio::test]
async fn the_rabbitmq_bus_on_sqlite_is_refused_with_the_reason() {
    let message = refused(&["serve", "--bus", "rabbitmq"]).await;
    assert!(
        message.contains("the RabbitMQ bus needs PostgreSQL"),
        "{message}"
    );
    let message = refused(&["worker"]).await;
    assert!(
        message.contains("the RabbitMQ bus needs PostgreSQL"),
        "{message}"
    );
}

#[tokio::test]
async fn an_unknown_database_url_is_refused_with_the_accepted_schemes() {
    let message = refused(&["serve", "--database-url", "mysql://root@127.0.0.1/x"]).await;
    assert!(message.contains("must start with postgres://"), "{message}");
}

/// An API and its workers started at the same time on a database that does
/// not exist yet (the README's RabbitMQ quick start, docker compose): they
/// race to create it and to migrate it, and every one of them starts.
#[tokio::test]
async fn processes_started_together_on_a_new_postgres_database_all_start() {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for tests");
    let (server, _) = base.rsplit_once('/').expect("URL with a database");
    let name = format!("together_{}", Uuid::new_v4().simple());
    let url = format!("{server}/{name}");

    let starts = (0..4).map(|_| marketplace::store::postgres::connect(&url, 2));
    let pools = futures::future::join_all(starts).await;
    let failures: Vec<String> = pools
        .iter()
        .filter_map(|pool| pool.as_ref().err().map(|error| format!("{error:#}")))
        .collect();
    for pool in pools.into_iter().flatten() {
        let (books,): (i64,) = sqlx::query_as("SELECT count(*) FROM books")
            .fetch_one(&pool)
            .await
            .expect("a migrated database");
        assert_eq!(books, 0);
        pool.close().await;
    }

    let admin = sqlx::PgPool::connect(&base).await.expect("PostgreSQL");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .expect("drop the test database");
    assert!(failures.is_empty(), "every process starts: {failures:?}");
}
