//! Batch handlers on the async bus, applying each batch in one transaction
//! of a real PostgreSQL: each test gets a fresh database from
//! `#[sqlx::test]` on the server at `DATABASE_URL`, e.g.
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/test`.
//!
//! Batches are sized so they run when full (a linger far longer than the
//! test), which makes their composition exact rather than timing-dependent.
#![cfg(feature = "postgres")]

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bus_core::{
    AsyncBus, AsyncBusConfig, BatchConfig, BatchHandler, BatchOutcome, Command, CommandBusExt,
    HandlerError, Handlers, InMemoryBus, InMemoryDeadLetters, Message, MessageContext, RetryPolicy,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ship {
    order: i32,
}
impl Message for Ship {
    const NAME: &'static str = "test.Ship";
}
impl Command for Ship {}

/// Order 13 breaks the table's check constraint: a poison message the
/// database itself refuses, aborting the whole transaction it is in.
const POISON: i32 = 13;

async fn create_shipments(pool: &PgPool) {
    sqlx::raw_sql("CREATE TABLE shipments (order_no INT PRIMARY KEY CHECK (order_no <> 13))")
        .execute(pool)
        .await
        .unwrap();
}

async fn shipped(pool: &PgPool) -> Vec<i32> {
    sqlx::query_scalar("SELECT order_no FROM shipments ORDER BY order_no")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// Inserts a batch of shipments in one transaction (a plain `INSERT`: a
/// message applied twice would fail on the primary key). Records the size
/// of every call; fails its first call after writing, if told to.
#[derive(Clone)]
struct ShipAll {
    pool: PgPool,
    calls: Arc<Mutex<Vec<usize>>>,
    attempts: Arc<Mutex<Vec<u32>>>,
    fail_first_commit: Arc<AtomicBool>,
    /// The error of the failed first commit (default: retryable).
    first_failure: Arc<Mutex<Option<HandlerError>>>,
}

impl ShipAll {
    fn new(pool: &PgPool) -> Self {
        Self {
            pool: pool.clone(),
            calls: Arc::default(),
            attempts: Arc::default(),
            fail_first_commit: Arc::default(),
            first_failure: Arc::default(),
        }
    }

    fn calls(&self) -> Vec<usize> {
        self.calls.lock().unwrap().clone()
    }
}

impl BatchHandler<Ship> for ShipAll {
    async fn handle_batch(&self, batch: &[(Ship, MessageContext)]) -> BatchOutcome {
        self.calls.lock().unwrap().push(batch.len());
        self.attempts
            .lock()
            .unwrap()
            .extend(batch.iter().map(|(_, context)| context.attempt()));
        let mut tx = self.pool.begin().await?;
        for (ship, _) in batch {
            sqlx::query("INSERT INTO shipments (order_no) VALUES ($1)")
                .bind(ship.order)
                .execute(&mut *tx)
                .await?;
        }
        if self.fail_first_commit.swap(false, Ordering::SeqCst) {
            // Dropping the transaction rolls it back.
            let error = self.first_failure.lock().unwrap().take();
            return Err(error.unwrap_or_else(|| HandlerError::retryable("could not serialize")));
        }
        tx.commit().await?;
        Ok(batch.iter().map(|_| Ok(())).collect())
    }
}

fn bus_config() -> AsyncBusConfig {
    AsyncBusConfig {
        capacity: 100,
        concurrency: 4,
        retry: RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            multiplier: 1.0,
            max_backoff: Duration::from_millis(1),
        },
        drain_timeout: Duration::from_secs(30),
    }
}

/// Batches of exactly `size`: they run when full.
fn full_batches_of(size: usize) -> BatchConfig {
    BatchConfig::new(size, Duration::from_secs(3600))
}

fn start(handler: ShipAll, batch: BatchConfig) -> (AsyncBus, InMemoryDeadLetters) {
    let handlers = Handlers::builder()
        .command_batch::<Ship, _>(handler, batch)
        .build()
        .unwrap();
    let dead_letters = InMemoryDeadLetters::default();
    let bus =
        AsyncBus::start_with_dead_letters(handlers, bus_config(), Arc::new(dead_letters.clone()));
    (bus, dead_letters)
}

/// Awaits `future`, failing the test instead of hanging if the bus is stuck.
async fn bounded<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), future)
        .await
        .expect("the bus got stuck")
}

#[sqlx::test]
async fn a_poison_message_in_the_middle_of_a_batch_is_dead_lettered_alone_and_the_others_applied(
    pool: PgPool,
) {
    create_shipments(&pool).await;
    let handler = ShipAll::new(&pool);
    let (bus, dead_letters) = start(handler.clone(), full_batches_of(9));

    let orders: Vec<i32> = (9..=17).collect();
    for order in &orders {
        bus.send(&Ship { order: *order }).await.unwrap();
    }
    bounded(bus.shutdown()).await;

    let expected: Vec<i32> = orders.iter().copied().filter(|o| *o != POISON).collect();
    assert_eq!(shipped(&pool).await, expected, "every neighbour applied");
    let dead = dead_letters.list();
    assert_eq!(dead.len(), 1, "only the poison is dead-lettered: {dead:?}");
    let poison: Ship = dead[0].envelope.decode().unwrap();
    assert_eq!(poison.order, POISON);
    assert!(
        dead[0].error.contains("shipments_order_no_check"),
        "the dead letter says why: {}",
        dead[0].error
    );
    assert_eq!(dead[0].attempts, 1, "a constraint violation is not retried");
    assert_eq!(
        handler.calls(),
        [vec![9], vec![1; 9]].concat(),
        "one batch, then each message alone"
    );
}

#[sqlx::test]
async fn a_batch_whose_transaction_fails_once_is_applied_exactly_once_per_message(pool: PgPool) {
    create_shipments(&pool).await;
    let handler = ShipAll::new(&pool);
    handler.fail_first_commit.store(true, Ordering::SeqCst);
    let (bus, dead_letters) = start(handler.clone(), full_batches_of(5));

    for order in 1..=5 {
        bus.send(&Ship { order }).await.unwrap();
    }
    bounded(bus.shutdown()).await;

    // A second application would have failed on the primary key and been
    // dead-lettered.
    assert_eq!(shipped(&pool).await, [1, 2, 3, 4, 5]);
    assert_eq!(dead_letters.list().len(), 0, "nothing dead-lettered");
    assert_eq!(handler.calls(), [5, 1, 1, 1, 1, 1]);
}

#[sqlx::test]
async fn an_infrastructure_failure_of_a_batch_keeps_every_message_without_counting_an_attempt(
    pool: PgPool,
) {
    create_shipments(&pool).await;
    let handler = ShipAll::new(&pool);
    handler.fail_first_commit.store(true, Ordering::SeqCst);
    *handler.first_failure.lock().unwrap() = Some(HandlerError::infrastructure("pool timed out"));
    let (bus, dead_letters) = start(handler.clone(), full_batches_of(4));

    for order in 1..=4 {
        bus.send(&Ship { order }).await.unwrap();
    }
    bounded(bus.shutdown()).await;

    assert_eq!(shipped(&pool).await, [1, 2, 3, 4]);
    assert_eq!(dead_letters.list().len(), 0);
    assert!(
        handler.attempts.lock().unwrap().iter().all(|a| *a == 1),
        "kept on their first attempt: {:?}",
        handler.attempts.lock().unwrap()
    );
    assert_eq!(handler.calls()[0], 4, "not split: the batch was kept whole");
    assert!(!handler.calls()[1..].contains(&0));
}

#[sqlx::test]
async fn several_full_batches_each_run_in_one_call(pool: PgPool) {
    create_shipments(&pool).await;
    let handler = ShipAll::new(&pool);
    let (bus, dead_letters) = start(handler.clone(), full_batches_of(4));

    for order in 100..112 {
        bus.send(&Ship { order }).await.unwrap();
    }
    bounded(bus.shutdown()).await;

    assert_eq!(shipped(&pool).await, (100..112).collect::<Vec<_>>());
    assert_eq!(dead_letters.list().len(), 0);
    assert_eq!(handler.calls(), [4, 4, 4]);
}

#[sqlx::test]
async fn a_batch_short_of_its_size_runs_once_its_linger_has_passed(pool: PgPool) {
    create_shipments(&pool).await;
    let handler = ShipAll::new(&pool);
    let (bus, _) = start(
        handler.clone(),
        BatchConfig::new(50, Duration::from_millis(20)),
    );

    for order in 1..=3 {
        bus.send(&Ship { order }).await.unwrap();
    }
    // Not shut down: only the linger can make the batch run.
    bounded(async {
        while shipped(&pool).await.len() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(handler.calls().iter().sum::<usize>(), 3);
    bounded(bus.shutdown()).await;
}

#[sqlx::test]
async fn with_batch_size_one_the_handler_takes_one_message_per_call(pool: PgPool) {
    create_shipments(&pool).await;
    let handler = ShipAll::new(&pool);
    let (bus, dead_letters) = start(handler.clone(), BatchConfig::disabled());

    for order in [12, POISON, 14] {
        bus.send(&Ship { order }).await.unwrap();
    }
    bounded(bus.shutdown()).await;

    assert_eq!(shipped(&pool).await, [12, 14]);
    assert_eq!(dead_letters.list().len(), 1);
    assert_eq!(handler.calls(), [1, 1, 1]);
}

#[sqlx::test]
async fn on_the_sync_bus_a_batch_handler_runs_each_command_alone_and_returns_its_error(
    pool: PgPool,
) {
    create_shipments(&pool).await;
    let handler = ShipAll::new(&pool);
    let handlers = Handlers::builder()
        .command_batch::<Ship, _>(handler.clone(), full_batches_of(50))
        .build()
        .unwrap();
    let bus = InMemoryBus::new(handlers);

    bus.send(&Ship { order: 1 }).await.unwrap();
    let refused = bus.send(&Ship { order: POISON }).await.unwrap_err();
    assert!(
        refused.to_string().contains("shipments_order_no_check"),
        "{refused}"
    );
    assert_eq!(shipped(&pool).await, [1]);
    assert_eq!(handler.calls(), [1, 1]);
}

#[sqlx::test]
async fn a_batch_handler_counts_as_the_one_handler_of_its_command(pool: PgPool) {
    let handler = ShipAll::new(&pool);
    let twice = Handlers::builder()
        .command_batch::<Ship, _>(handler.clone(), BatchConfig::default())
        .command_batch::<Ship, _>(handler, BatchConfig::default())
        .build();
    assert!(matches!(
        twice,
        Err(bus_core::RegistrationError::DuplicateCommandHandler { .. })
    ));
}
