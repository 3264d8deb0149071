//! The in-memory async bus: bounded, and a graceful shutdown loses nothing
//! it accepted (a crash does: it says so at start).

use futures::future::join_all;
use marketplace::config::BusKind;
use sqlx::{Connection, PgPool};
use uuid::Uuid;

use crate::helpers::{assert_problem, logged, spawn_app, spawn_app_with};

async fn users_stored(pool: &PgPool, ids: &[Uuid]) -> i64 {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM users WHERE id = ANY($1)")
        .bind(ids)
        .fetch_one(pool)
        .await
        .unwrap();
    n
}

/// A full queue answers 503 at once instead of growing or hanging, and
/// everything it did accept is applied once the handlers can progress.
#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn a_saturated_bus_answers_503_and_applies_what_it_accepted(pool: PgPool) {
    let app = spawn_app_with(
        pool.clone(),
        BusKind::InMemoryAsync,
        &["--queue-capacity", "3", "--concurrency", "1"],
    )
    .await;

    // Hold the row the first command writes, so the only handler blocks.
    let blocked = Uuid::new_v4();
    let mut blocker = pool.acquire().await.unwrap();
    let mut lock = blocker.begin().await.unwrap();
    sqlx::query("INSERT INTO users (id, name) VALUES ($1, 'blocker')")
        .bind(blocked)
        .execute(&mut *lock)
        .await
        .unwrap();
    assert_eq!(app.put_user(blocked, "Ann").await.status(), 200);

    let mut accepted = vec![blocked];
    let mut refused = 0;
    for _ in 0..10 {
        let id = Uuid::new_v4();
        let response = app.put_user(id, "Bob").await;
        if response.status() == 200 {
            accepted.push(id);
        } else {
            let problem = assert_problem(response, 503).await;
            assert!(problem["detail"].as_str().unwrap().contains("saturated"));
            refused += 1;
        }
    }
    assert_eq!(accepted.len(), 3, "the queue holds its capacity");
    assert_eq!(refused, 8);

    lock.rollback().await.unwrap();
    app.shutdown().await;
    assert_eq!(users_stored(&pool, &accepted).await, accepted.len() as i64);
}

/// Shutting down right after a burst of writes applies every accepted one.
#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn shutdown_applies_every_accepted_command(pool: PgPool) {
    let app = spawn_app(pool.clone(), BusKind::InMemoryAsync).await;
    let ids: Vec<Uuid> = (0..300).map(|_| Uuid::new_v4()).collect();
    let answers = join_all(ids.iter().map(|&id| app.put_user(id, "Burst"))).await;
    let accepted: Vec<Uuid> = ids
        .iter()
        .zip(&answers)
        .filter(|(_, r)| r.status() == 200)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(accepted.len(), ids.len());
    app.shutdown().await;
    assert_eq!(users_stored(&pool, &accepted).await, accepted.len() as i64);
}

/// Events raised by commands applied during the drain are handled too.
#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn shutdown_relays_and_handles_the_events_of_drained_commands(pool: PgPool) {
    let app = spawn_app(pool.clone(), BusKind::InMemoryAsync).await;
    let seeded = app.seed_offer(5.0, 10).await;
    let cheaper = Uuid::new_v4();
    assert_eq!(
        app.post_offer(cheaper, seeded.book, seeded.user, 1.0, 1)
            .await
            .status(),
        200
    );
    app.shutdown().await;
    let (offer_id,): (Option<Uuid>,) = sqlx::query_as("SELECT offer_id FROM books WHERE id = $1")
        .bind(seeded.book)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(offer_id, Some(cheaper));
    let (left,): (i64,) = sqlx::query_as("SELECT count(*) FROM bus_outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

/// Its one weakness is said at start, where an operator reads it.
#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn it_warns_at_start_that_a_crash_loses_the_commands_it_accepted(pool: PgPool) {
    let app = spawn_app(pool, BusKind::InMemoryAsync).await;
    let warning = "the in-memory async bus keeps accepted commands in memory only: \
                   a crash loses those not yet applied (--bus durable keeps them in the database)";
    assert!(!logged(warning, &[]).is_empty(), "a WARN line at start");
    app.shutdown().await;
}
