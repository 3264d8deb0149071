//! The transactional outbox on a real PostgreSQL: each test gets a fresh
//! database from `#[sqlx::test]` on the server at `DATABASE_URL`, e.g.
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/test`.
#![cfg(feature = "postgres")]

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use bus_core::{
    outbox::{self, OutboxRelay, RelayConfig},
    BoxFuture, DispatchError, Envelope, Event, EventBus, Message,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Serialize, Deserialize)]
struct InvoiceIssued {
    number: u32,
}
impl Message for InvoiceIssued {
    const NAME: &'static str = "test.InvoiceIssued";
}
impl Event for InvoiceIssued {}

/// An event bus that counts what it is given, and can be switched off to
/// play a broker that is down.
#[derive(Default)]
struct CountingBus {
    down: AtomicBool,
    published: Mutex<HashMap<Uuid, usize>>,
}

impl CountingBus {
    fn published(&self) -> HashMap<Uuid, usize> {
        self.published.lock().unwrap().clone()
    }
}

impl EventBus for CountingBus {
    fn publish_envelope(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(DispatchError::Unavailable {
                    reason: "broker down".into(),
                    source: None,
                });
            }
            // Let the other relay run while this one holds its batch.
            tokio::task::yield_now().await;
            *self
                .published
                .lock()
                .unwrap()
                .entry(envelope.id)
                .or_default() += 1;
            Ok(())
        })
    }
}

async fn create_outbox(pool: &PgPool) {
    sqlx::raw_sql(outbox::SCHEMA).execute(pool).await.unwrap();
}

async fn outbox_len(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM bus_outbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn invoice(number: u32) -> Envelope {
    Envelope::new(&InvoiceIssued { number }).unwrap()
}

fn relay(pool: &PgPool, bus: &Arc<CountingBus>, batch_size: usize) -> OutboxRelay {
    OutboxRelay::new(
        pool.clone(),
        bus.clone(),
        RelayConfig {
            batch_size,
            ..RelayConfig::default()
        },
    )
}

#[sqlx::test(migrations = false)]
async fn an_event_staged_in_a_committed_transaction_is_published_then_removed(pool: PgPool) {
    create_outbox(&pool).await;
    let bus = Arc::new(CountingBus::default());
    let event = invoice(1);

    let mut tx = pool.begin().await.unwrap();
    outbox::stage(&mut tx, &event).await.unwrap();
    tx.commit().await.unwrap();
    let published = relay(&pool, &bus, 10).relay_batch().await.unwrap();

    assert_eq!(published, 1);
    assert_eq!(bus.published(), HashMap::from([(event.id, 1)]));
    assert_eq!(outbox_len(&pool).await, 0);
}

#[sqlx::test(migrations = false)]
async fn the_relayed_envelope_is_the_staged_one(pool: PgPool) {
    create_outbox(&pool).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    struct Keep(Arc<Mutex<Vec<Envelope>>>);
    impl EventBus for Keep {
        fn publish_envelope(&self, envelope: Envelope) -> BoxFuture<'_, Result<(), DispatchError>> {
            self.0.lock().unwrap().push(envelope);
            Box::pin(std::future::ready(Ok(())))
        }
    }
    let event = invoice(7).with_header("tenant", "acme");

    outbox::stage(&mut pool.acquire().await.unwrap(), &event)
        .await
        .unwrap();
    OutboxRelay::new(
        pool.clone(),
        Arc::new(Keep(seen.clone())),
        RelayConfig::default(),
    )
    .relay_batch()
    .await
    .unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].id, event.id);
    assert_eq!(seen[0].message_type, event.message_type);
    assert_eq!(seen[0].headers, event.headers);
    assert_eq!(seen[0].timestamp, event.timestamp);
    assert_eq!(seen[0].decode::<InvoiceIssued>().unwrap().number, 7);
}

#[sqlx::test(migrations = false)]
async fn an_event_staged_in_a_rolled_back_transaction_is_never_published(pool: PgPool) {
    create_outbox(&pool).await;
    let bus = Arc::new(CountingBus::default());
    let (rolled_back, committed) = (invoice(1), invoice(2));

    let mut tx = pool.begin().await.unwrap();
    outbox::stage(&mut tx, &rolled_back).await.unwrap();
    tx.rollback().await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    outbox::stage(&mut tx, &committed).await.unwrap();
    tx.commit().await.unwrap();
    let relay = relay(&pool, &bus, 10);
    relay.flush().await;

    assert_eq!(bus.published(), HashMap::from([(committed.id, 1)]));
    assert_eq!(outbox_len(&pool).await, 0);
}

#[sqlx::test(migrations = false)]
async fn an_event_the_bus_refuses_stays_in_the_outbox_and_is_published_later(pool: PgPool) {
    create_outbox(&pool).await;
    let bus = Arc::new(CountingBus::default());
    let event = invoice(3);
    let mut tx = pool.begin().await.unwrap();
    outbox::stage(&mut tx, &event).await.unwrap();
    tx.commit().await.unwrap();
    let relay = relay(&pool, &bus, 10);

    bus.down.store(true, Ordering::SeqCst);
    assert_eq!(relay.relay_batch().await.unwrap(), 0);
    assert_eq!(outbox_len(&pool).await, 1, "kept for a later batch");
    assert!(bus.published().is_empty());

    bus.down.store(false, Ordering::SeqCst);
    assert_eq!(relay.relay_batch().await.unwrap(), 1);
    assert_eq!(bus.published(), HashMap::from([(event.id, 1)]));
    assert_eq!(outbox_len(&pool).await, 0);
}

#[sqlx::test(migrations = false)]
async fn two_relays_on_one_outbox_publish_every_event_exactly_once(pool: PgPool) {
    const EVENTS: u32 = 500;
    create_outbox(&pool).await;
    let bus = Arc::new(CountingBus::default());
    let mut staged = Vec::new();
    let mut tx = pool.begin().await.unwrap();
    for number in 0..EVENTS {
        let event = invoice(number);
        outbox::stage(&mut tx, &event).await.unwrap();
        staged.push(event.id);
    }
    tx.commit().await.unwrap();

    // Each relay takes batches until it finds nothing it can lock; the one
    // still holding a batch then comes back for the rest.
    let drain = |relay: OutboxRelay| async move {
        let mut published = 0;
        loop {
            match relay.relay_batch().await.unwrap() {
                0 => return published,
                n => published += n,
            }
        }
    };
    let (a, b) = tokio::join!(
        tokio::spawn(drain(relay(&pool, &bus, 20))),
        tokio::spawn(drain(relay(&pool, &bus, 20))),
    );

    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a + b, EVENTS as usize);
    let published = bus.published();
    assert_eq!(published.len(), staged.len());
    for id in staged {
        assert_eq!(published.get(&id), Some(&1), "event {id}");
    }
    assert_eq!(outbox_len(&pool).await, 0);
}

/// The same outbox on an SQLite file of its own (removed at the end).
mod sqlite {
    use super::*;
    use sqlx::{sqlite::SqliteConnectOptions, SqlitePool};

    async fn sqlite_outbox() -> (SqlitePool, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("outbox-test-{}.db", Uuid::new_v4().simple()));
        let pool = SqlitePool::connect_with(
            SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
        sqlx::raw_sql(outbox::sqlite::SCHEMA)
            .execute(&pool)
            .await
            .unwrap();
        (pool, path)
    }

    async fn len(pool: &SqlitePool) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM bus_outbox")
            .fetch_one(pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn committed_events_are_published_once_rolled_back_ones_never_refused_ones_later() {
        let (pool, path) = sqlite_outbox().await;
        let bus = Arc::new(CountingBus::default());
        let (rolled_back, committed) = (invoice(1), invoice(2));

        let mut tx = pool.begin().await.unwrap();
        outbox::sqlite::stage(&mut tx, &rolled_back).await.unwrap();
        tx.rollback().await.unwrap();
        let mut tx = pool.begin().await.unwrap();
        outbox::sqlite::stage(&mut tx, &committed).await.unwrap();
        tx.commit().await.unwrap();
        let relay = OutboxRelay::new(pool.clone(), bus.clone(), RelayConfig::default());

        bus.down.store(true, Ordering::SeqCst);
        assert_eq!(relay.relay_batch().await.unwrap(), 0);
        assert_eq!(len(&pool).await, 1, "kept for a later batch");

        bus.down.store(false, Ordering::SeqCst);
        relay.flush().await;
        assert_eq!(bus.published(), HashMap::from([(committed.id, 1)]));
        assert_eq!(len(&pool).await, 0);

        pool.close().await;
        let _ = std::fs::remove_file(path);
    }
}
