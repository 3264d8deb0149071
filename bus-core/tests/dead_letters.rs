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

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Refunded {
    amount: i64,
}
impl Message for Refunded {
    const NAME: &'static str = "test.Refunded";
}
impl bus_core::Event for Refunded {}

/// A dead letter of one subscriber, replayed from the table through the
/// outbox, goes back to that subscriber alone, as a first attempt with the
/// same message id; a dry run and a purge dry run change nothing.
#[tokio::test]
async fn a_replayed_dead_letter_goes_back_through_the_outbox_to_its_one_subscriber() {
    use std::sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Mutex,
    };

    use bus_core::{
        dead_letter_ops::{DeadLetterSelector, GroupBy},
        event_fn,
        outbox::{OutboxRelay, RelayConfig},
        DeadLetterTable, EventBusExt,
    };

    let pool = SqlitePool::connect("sqlite::memory:").await.unwrap();
    for schema in [DEAD_LETTERS_SQLITE_SCHEMA, bus_core::outbox::sqlite::SCHEMA] {
        sqlx::raw_sql(schema).execute(&pool).await.unwrap();
    }
    let ledger_works = Arc::new(AtomicBool::new(false));
    let ledger_seen = Arc::new(Mutex::new(Vec::new()));
    let mailed = Arc::new(AtomicUsize::new(0));
    let handlers = {
        let (works, seen, mailed) = (ledger_works.clone(), ledger_seen.clone(), mailed.clone());
        Handlers::builder()
            .subscribe::<Refunded, _>(
                "ledger",
                event_fn(move |_: Refunded, context: MessageContext| {
                    let (works, seen) = (works.clone(), seen.clone());
                    async move {
                        if !works.load(Ordering::SeqCst) {
                            return Err(HandlerError::permanent("ledger closed"));
                        }
                        let envelope = context.envelope();
                        seen.lock().unwrap().push((
                            envelope.id,
                            envelope.headers.clone(),
                            context.attempt(),
                        ));
                        Ok(())
                    }
                }),
            )
            .subscribe::<Refunded, _>(
                "mailer",
                event_fn(move |_: Refunded, _: MessageContext| {
                    let mailed = mailed.clone();
                    async move {
                        mailed.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    }
                }),
            )
            .build()
            .unwrap()
    };
    let bus = AsyncBus::builder(handlers)
        .config(AsyncBusConfig {
            retry: RetryPolicy::never(),
            ..AsyncBusConfig::default()
        })
        .dead_letters(Arc::new(DatabaseDeadLetters::sqlite(pool.clone())))
        .start();
    bus.publish(&Refunded { amount: 3 }).await.unwrap();
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM bus_dead_letters")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    eventually_rows(1, count).await;

    let table = DeadLetterTable::Sqlite(pool.clone());
    let groups = table
        .summarize(&DeadLetterSelector::default(), GroupBy::Reason)
        .await
        .unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].queue, "event.test.Refunded.ledger");
    assert_eq!(groups[0].reason.as_deref(), Some("ledger closed"));
    let records = table.find(&DeadLetterSelector::default()).await.unwrap();
    let id = records[0].message_id.unwrap();
    let selector = DeadLetterSelector {
        message_id: Some(id),
        ..DeadLetterSelector::default()
    };
    assert_eq!(table.purge(&selector, true).await.unwrap().len(), 1);
    assert_eq!(table.replay(&selector, true).await.unwrap().len(), 1);
    eventually_rows(1, count).await;

    ledger_works.store(true, Ordering::SeqCst);
    assert_eq!(table.replay(&selector, false).await.unwrap().len(), 1);
    eventually_rows(0, count).await;
    let relay = OutboxRelay::new(pool.clone(), Arc::new(bus.clone()), RelayConfig::default());
    assert_eq!(relay.relay_batch().await.unwrap(), 1);
    bus.shutdown().await;

    let seen = ledger_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "the ledger ran once");
    let (seen_id, headers, attempt) = &seen[0];
    assert_eq!(*seen_id, id, "same message id");
    assert_eq!(*attempt, 1, "attempts start again");
    assert!(
        !headers.contains_key(bus_core::dead_letter_ops::REDELIVER_TO),
        "{headers:?}"
    );
    assert_eq!(
        mailed.load(Ordering::SeqCst),
        1,
        "the mailer was not run again"
    );
}
