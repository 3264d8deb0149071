//! Reads while the database cannot be reached: `503` problem+json with
//! `Retry-After`, and nothing of what the driver said.

use marketplace::config::BusKind;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::helpers::{assert_problem, spawn_app};

/// The test database's name, and a connection to the server's maintenance
/// database to switch it off and on with.
async fn admin(pool: &PgPool) -> (String, PgConnection) {
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(pool)
        .await
        .unwrap();
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    (name, PgConnection::connect(&url).await.unwrap())
}

/// Refuses new connections to `name` and ends the open ones: for the app,
/// the database has gone away (the server keeps serving everyone else).
async fn make_unreachable(admin: &mut PgConnection, name: &str) {
    sqlx::query(&format!(
        r#"ALTER DATABASE "{name}" ALLOW_CONNECTIONS false"#
    ))
    .execute(&mut *admin)
    .await
    .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .execute(&mut *admin)
        .await
        .unwrap();
}

async fn make_reachable(admin: &mut PgConnection, name: &str) {
    sqlx::query(&format!(
        r#"ALTER DATABASE "{name}" ALLOW_CONNECTIONS true"#
    ))
    .execute(&mut *admin)
    .await
    .unwrap();
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn reads_answer_503_with_retry_after_and_no_driver_text_while_the_database_is_unreachable(
    pool: PgPool,
) {
    let (name, mut admin) = admin(&pool).await;
    let app = spawn_app(pool, BusKind::InMemory).await;
    let user = Uuid::new_v4();
    assert_eq!(app.put_user(user, "Ann").await.status(), 200);
    assert_eq!(app.get(&format!("/users/{user}")).await.status(), 200);

    make_unreachable(&mut admin, &name).await;
    let paths = [
        format!("/users/{user}"),
        "/books".to_owned(),
        format!("/books/{}", Uuid::new_v4()),
        format!("/offers/{}", Uuid::new_v4()),
        format!("/orders/{}", Uuid::new_v4()),
        // The mobile lists: a search, a cursor page, my orders, my offers.
        "/books?q=herbert".to_owned(),
        "/books?after=".to_owned(),
        format!("/users/{user}/orders"),
        format!("/users/{user}/offers"),
    ];
    let mut answers = Vec::new();
    for path in &paths {
        let response = app.get(path).await;
        let retry_after = response.headers().get("retry-after").cloned();
        answers.push((path, retry_after, assert_problem(response, 503).await));
    }
    make_reachable(&mut admin, &name).await;

    for (path, retry_after, problem) in answers {
        assert_eq!(
            retry_after.as_ref().and_then(|v| v.to_str().ok()),
            Some("1"),
            "{path}"
        );
        assert_eq!(problem["type"], "/problems/unavailable", "{path}");
        assert_eq!(
            problem["detail"],
            marketplace::http::error::DATABASE_UNAVAILABLE,
            "{path}: {problem}"
        );
    }
    // Back to normal once the database answers again.
    app.eventually(|| async {
        (app.get(&format!("/users/{user}")).await.status() == 200).then_some(())
    })
    .await;
    app.shutdown().await;
}
