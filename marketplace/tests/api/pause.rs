//! Pausing and resuming a queue's consumer through the worker's admin
//! routes: messages wait in the queue while it is paused, across a restart
//! of the worker, and are applied once it is resumed.

use marketplace::config::BusKind;
use reqwest::Response;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::helpers::{assert_problem, spawn_app_with, TestApp};

const TOKEN: &str = "an-admin-token-for-the-tests";

fn worker(app: &TestApp) -> &str {
    app.worker_health_address()
        .expect("a RabbitMQ app has a worker")
}

async fn admin_post(app: &TestApp, path: &str, token: Option<&str>) -> Response {
    let mut request = app.client.post(format!("http://{}{path}", worker(app)));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("admin request")
}

async fn admin_get(app: &TestApp, path: &str, token: Option<&str>) -> Response {
    let mut request = app.client.get(format!("http://{}{path}", worker(app)));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("admin request")
}

/// The queue of the `SaveUser` command, as `GET /admin/queues` names it.
async fn save_user_queue(app: &TestApp) -> String {
    let response = admin_get(app, "/admin/queues", Some(TOKEN)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|queue| queue["queue"].as_str().unwrap().to_owned())
        .find(|queue| queue.ends_with(".command.marketplace.SaveUser"))
        .unwrap_or_else(|| panic!("no SaveUser queue in {body}"))
}

async fn paused_in_readiness(app: &TestApp) -> Vec<String> {
    let ready = admin_get(app, "/health/ready", None).await;
    assert_eq!(ready.status(), 200, "a paused consumer is not unhealthy");
    let body: Value = ready.json().await.unwrap();
    body["pausedQueues"]
        .as_array()
        .unwrap_or_else(|| panic!("pausedQueues in {body}"))
        .iter()
        .map(|queue| queue.as_str().unwrap().to_owned())
        .collect()
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn a_paused_queue_keeps_its_messages_across_a_restart_until_it_is_resumed(pool: PgPool) {
    let mut app = spawn_app_with(pool, BusKind::Rabbitmq, &["--admin-token", TOKEN]).await;
    let queue = save_user_queue(&app).await;

    let paused = admin_post(&app, &format!("/admin/queues/{queue}/pause"), Some(TOKEN)).await;
    assert_eq!(paused.status(), 200);
    assert_eq!(paused_in_readiness(&app).await, vec![queue.clone()]);

    // Saves are accepted and wait in the queue, unapplied.
    let users: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
    for (n, user) in users.iter().enumerate() {
        let response = app.put_user(*user, &format!("waiting {n}")).await;
        assert!(response.status().is_success(), "{}", response.status());
    }
    app.eventually(|| async { (app.queue_depth(&queue).await == 5).then_some(()) })
        .await;
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0);

    // A restarted worker reads the paused set and does not consume the queue.
    app.restart_worker().await;
    assert_eq!(paused_in_readiness(&app).await, vec![queue.clone()]);
    let late = Uuid::new_v4();
    assert!(app.put_user(late, "late").await.status().is_success());
    app.eventually(|| async { (app.queue_depth(&queue).await == 6).then_some(()) })
        .await;
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0);
    let listed: Value = admin_get(&app, "/admin/queues", Some(TOKEN))
        .await
        .json()
        .await
        .unwrap();
    let entry = listed["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["queue"] == queue.as_str())
        .unwrap();
    assert_eq!(entry["paused"], true, "{entry}");
    assert_eq!(entry["consuming"], false, "{entry}");

    // Resuming drains the queue: every save applied, once.
    let resumed = admin_post(&app, &format!("/admin/queues/{queue}/resume"), Some(TOKEN)).await;
    assert_eq!(resumed.status(), 200);
    app.eventually(|| async { (app.count("SELECT COUNT(*) FROM users").await == 6).then_some(()) })
        .await;
    app.eventually(|| async { (app.queue_depth(&queue).await == 0).then_some(()) })
        .await;
    assert!(paused_in_readiness(&app).await.is_empty());
    for user in users.iter().chain([&late]) {
        assert_eq!(app.get(&format!("/users/{user}")).await.status(), 200);
    }
    assert_eq!(app.dead_letter_count().await, 0);
    app.shutdown().await;
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn the_admin_routes_need_the_token_and_a_known_queue(pool: PgPool) {
    let app = spawn_app_with(pool, BusKind::Rabbitmq, &["--admin-token", TOKEN]).await;
    let queue = save_user_queue(&app).await;
    let pause = format!("/admin/queues/{queue}/pause");

    let missing = admin_post(&app, &pause, None).await;
    let challenge = missing.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert_problem(missing, 401).await;

    let wrong = admin_post(&app, &pause, Some("not-the-token")).await;
    let challenge = wrong.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert_problem(wrong, 401).await;
    assert_problem(
        admin_get(&app, "/admin/queues", Some("not-the-token")).await,
        401,
    )
    .await;

    let unknown = admin_post(&app, "/admin/queues/no.such.queue/pause", Some(TOKEN)).await;
    assert_problem(unknown, 404).await;

    // Nothing was paused by the refused requests.
    assert!(paused_in_readiness(&app).await.is_empty());
    app.shutdown().await;
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn without_a_token_the_admin_routes_are_off(pool: PgPool) {
    let app = spawn_app_with(pool, BusKind::Rabbitmq, &[]).await;
    assert_problem(admin_get(&app, "/admin/queues", Some(TOKEN)).await, 404).await;
    assert_problem(
        admin_post(&app, "/admin/queues/anything/pause", Some(TOKEN)).await,
        404,
    )
    .await;
    app.shutdown().await;
}

/// Workers sharing the database follow a pause recorded by another one
/// within `--pause-poll-interval`.
#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn a_worker_follows_the_paused_queues_recorded_in_the_database(pool: PgPool) {
    let app = spawn_app_with(
        pool.clone(),
        BusKind::Rabbitmq,
        &["--admin-token", TOKEN, "--pause-poll-interval", "100ms"],
    )
    .await;
    let queue = save_user_queue(&app).await;
    // What another worker's pause leaves behind.
    sqlx::query(
        "INSERT INTO bus_paused_queues (queue, paused_at, paused_by) VALUES ($1, now(), 'another worker')",
    )
    .bind(&queue)
    .execute(&pool)
    .await
    .unwrap();
    app.eventually(|| async { (paused_in_readiness(&app).await == [queue.clone()]).then_some(()) })
        .await;
    let user = Uuid::new_v4();
    assert!(app.put_user(user, "waiting").await.status().is_success());
    app.eventually(|| async { (app.queue_depth(&queue).await == 1).then_some(()) })
        .await;

    sqlx::query("DELETE FROM bus_paused_queues")
        .execute(&pool)
        .await
        .unwrap();
    app.eventually(|| async {
        (app.get(&format!("/users/{user}")).await.status() == 200).then_some(())
    })
    .await;
    assert!(paused_in_readiness(&app).await.is_empty());
    app.shutdown().await;
}

/// The admin routes keep the paused set in the database: while it does not
/// answer, they answer `503` with a fixed problem, say nothing of the
/// cause, and change nothing.
#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn the_admin_routes_answer_503_while_the_database_is_away(pool: PgPool) {
    let app = spawn_app_with(pool.clone(), BusKind::Rabbitmq, &["--admin-token", TOKEN]).await;
    let queue = save_user_queue(&app).await;
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .unwrap();

    // The test's own database refuses new connections and loses the open
    // ones; the shared server keeps running for every other test.
    let server = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let mut admin = PgConnection::connect(&server).await.unwrap();
    let quoted = format!("\"{}\"", database.replace('"', "\"\""));
    sqlx::query(&format!("ALTER DATABASE {quoted} ALLOW_CONNECTIONS false"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&database)
        .execute(&mut admin)
        .await
        .unwrap();

    let answers = [
        admin_get(&app, "/admin/queues", Some(TOKEN)).await,
        admin_post(&app, &format!("/admin/queues/{queue}/pause"), Some(TOKEN)).await,
        admin_post(&app, &format!("/admin/queues/{queue}/resume"), Some(TOKEN)).await,
    ];
    for answer in answers {
        assert!(answer.headers().contains_key("retry-after"));
        let problem = assert_problem(answer, 503).await;
        assert_eq!(
            problem["detail"],
            "the database does not answer right now; retry shortly"
        );
        let text = problem.to_string().to_lowercase();
        for internal in [
            database.to_lowercase().as_str(),
            "sqlx",
            "postgres",
            "paused-queue",
            "bus_paused_queues",
            "connection",
        ] {
            assert!(!text.contains(internal), "{internal:?} leaked: {problem}");
        }
    }
    sqlx::query(&format!("ALTER DATABASE {quoted} ALLOW_CONNECTIONS true"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    // Once it answers again, so do the routes: nothing was recorded.
    let listed = app
        .eventually(|| async {
            let response = admin_get(&app, "/admin/queues", Some(TOKEN)).await;
            (response.status() == 200).then_some(response)
        })
        .await;
    let listed: Value = listed.json().await.unwrap();
    let entry = listed["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["queue"] == queue.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["paused"], false, "{entry}");
    assert_eq!(entry["consuming"], true, "{entry}");
    app.shutdown().await;
}
