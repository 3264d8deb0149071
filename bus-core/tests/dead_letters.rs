//! Dead letters of the async bus kept in the database: they outlive the bus
//! and carry the whole envelope, on PostgreSQL (a fresh database from
//! `#[sqlx::test]` at `DATABASE_URL`) and on SQLite.

use std::{sync::Arc, time::Duration};

use bus_core::{
    command_fn, AsyncBus, AsyncBusConfig, Command, CommandBusExt, DatabaseDeadLetters, Envelope,
    HandlerError, Handlers, Message, MessageContext, RetryPolicy, DEAD_LETTERS_POSTGRES_SCHEMA,
    DEAD_LETTERS_SQLITE_SCHEMA,
};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, SqlitePool};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Refund {
    amount: i64,
}
impl Message for Refund {
    const NAME: &'static str = "test.Refund";
}
impl Command for Refund {}

fn refusing_bus(sink: DatabaseDeadLetters) -> AsyncBus {
    let handlers = Handlers::builder()
        .command(command_fn(|refund: Refund, _: MessageContext| async move {
            Err::<(), _>(HandlerError::permanent(format!(
                "refund of {} exceeds the payment",
                refund.amount
            )))
        }))
        .build()
        .unwrap();
    AsyncBus::builder(handlers)
        .config(AsyncBusConfig {
            retry: RetryPolicy::never(),
            ..AsyncBusConfig::default()
        })
        .dead_letters(Arc::new(sink))
        .start()
}

/// Polls `count` until it reaches `expected`, within 10 s.
async fn eventually_rows<F, Fut>(expected: i64, mut count: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = count().await;
        if rows == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{rows} dead letters, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[sqlx::test]
async fn a_dead_letter_of_the_async_bus_is_kept_in_postgres_with_its_envelope_and_reason(
    pool: PgPool,
) {
    sqlx::raw_sql(DEAD_LETTERS_POSTGRES_SCHEMA)
        .execute(&pool)
        .await
        .unwrap();
    let bus = refusing_bus(DatabaseDeadLetters::postgres(pool.clone()));
    bus.send(&Refund { amount: 12 }).await.unwrap();
    bus.shutdown().await;
    eventually_rows(1, || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM bus_dead_letters")
            .fetch_one(&pool)
            .await
            .unwrap()
    })
    .await;
    let (message_type, subscriber, reason, attempts, envelope): (
        String,
        Option<String>,
        String,
        i32,
        sqlx::types::Json<Envelope>,
    ) = sqlx::query_as(
        "SELECT message_type, subscriber, reason, attempts, envelope FROM bus_dead_letters",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(message_type, "test.Refund");
    assert_eq!(subscriber, None);
    assert_eq!(reason, "refund of 12 exceeds the payment");
    assert_eq!(attempts, 1);
    assert_eq!(envelope.0.decode::<Refund>().unwrap().amount, 12);
}

#[tokio::test]
async fn a_dead_letter_of_the_async_bus_is_kept_in_sqlite_with_its_envelope_and_reason() {
    let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
    sqlx::raw_sql(DEAD_LETTERS_SQLITE_SCHEMA)
        .execute(&pool)
        .await
        .unwrap();
    let bus = refusing_bus(DatabaseDeadLetters::sqlite(pool.clone()));
    bus.send(&Refund { amount: 7 }).await.unwrap();
    bus.shutdown().await;
    eventually_rows(1, || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM bus_dead_letters")
            .fetch_one(&pool)
            .await
            .unwrap()
    })
    .await;
    let (reason, envelope): (String, String) =
        sqlx::query_as("SELECT reason, envelope FROM bus_dead_letters")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(reason, "refund of 7 exceeds the payment");
    let envelope: Envelope = serde_json::from_str(&envelope).unwrap();
    assert_eq!(envelope.decode::<Refund>().unwrap().amount, 7);
}
