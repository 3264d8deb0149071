//! The raw limit of the write path end to end: two confirmed hops with
//! batched consumers, straight through lapin and sqlx, no HTTP, no bus code.
//! Its queues are classic on one broker, quorum on a cluster (the
//! [`Services`]' queue type), as the marketplace's are there.
//!
//! Publishers send persistent messages with confirms to the durable queue
//! `{namespace}.raw2.commands`. The first consumer takes up to
//! [`BATCH`] deliveries (or what came within [`LINGER`] of the first),
//! inserts them in one transaction into `raw_offers` (the shape of the
//! marketplace's `offers`, in a scratch database), commits, publishes one
//! persistent confirmed event per row to `{namespace}.raw2.events`, then
//! acks each delivery. The second consumer applies those events
//! [`BATCH`] per transaction (`UPDATE … WHERE id = ANY(…)`) and acks after
//! commit. Ack after commit, confirmed publishes and idempotent batches
//! (a redelivered one changes nothing) keep the guarantees the bus makes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bus_rabbitmq::lapin::message::Delivery;
use bus_rabbitmq::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use bus_rabbitmq::lapin::types::FieldTable;
use bus_rabbitmq::lapin::{BasicProperties, Channel, Confirmation, Connection};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::load::{closed_loop, open_loop};
use crate::processes::{self, Services};
use crate::raw_lapin::publish;
use crate::stats::LevelResult;

/// Most deliveries a consumer applies in one transaction (the worker's
/// `--batch-size` default).
pub(crate) const BATCH: usize = 50;
/// Longest wait after a batch's first delivery (the worker's
/// `--batch-linger-ms` default).
pub(crate) const LINGER: Duration = Duration::from_millis(5);
/// Unacknowledged deliveries per consumer (the worker's `--prefetch` default).
const PREFETCH: u16 = 64;

/// Confirm channels of the open-loop publishers (the API's default
/// `publisher_channels`).
const OPEN_LOOP_CHANNELS: usize = 64;

/// The table the raw consumers write: the marketplace's `offers` and a flag
/// the second hop sets.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS raw_offers (
    id         UUID          PRIMARY KEY,
    book_id    UUID          NOT NULL,
    seller_id  UUID          NOT NULL,
    price      NUMERIC(12,2) NOT NULL CHECK (price > 0),
    stock      INTEGER       NOT NULL CHECK (stock >= 0),
    applied    BOOLEAN       NOT NULL DEFAULT false,
    created_at TIMESTAMPTZ   NOT NULL DEFAULT now()
)";

/// A command as the publishers send it: the fields of `POST /offer`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawOffer {
    id: Uuid,
    book_id: Uuid,
    seller_id: Uuid,
    price: f64,
    stock: i32,
}

/// The event the first hop publishes per inserted row.
#[derive(Debug, Serialize, Deserialize)]
struct RawOfferCreated {
    id: Uuid,
}

/// What one end-to-end run of the raw two hops measured.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct RawEndToEnd {
    pub(crate) messages: usize,
    pub(crate) concurrency: usize,
    /// Seconds from the first publish until the last confirm.
    pub(crate) publish_seconds: f64,
    /// Seconds from the first publish until every message was applied.
    pub(crate) applied_seconds: f64,
    pub(crate) published_per_second: f64,
    pub(crate) applied_per_second: f64,
}

/// The scratch database, the two queues and both consumers running.
pub(crate) struct RawTwoHop {
    connection: Connection,
    pool: PgPool,
    database: String,
    services: Services,
    commands: String,
    events: String,
    /// Rows the second hop has marked applied.
    applied: Arc<AtomicU64>,
    /// The first consumer error, if any: a run fails instead of waiting.
    failure: Arc<std::sync::Mutex<Option<String>>>,
    consumers: Vec<JoinHandle<()>>,
}

impl RawTwoHop {
    /// Creates database `{database}` with `raw_offers`, declares the durable
    /// queues `{namespace}.raw2.commands` and `.events` (of the services'
    /// queue type), and starts both consumers.
    pub(crate) async fn start(
        services: &Services,
        database: &str,
        namespace: &str,
    ) -> Result<Self> {
        let url = services.database_url(database);
        if !Postgres::database_exists(&url).await.unwrap_or(false) {
            Postgres::create_database(&url)
                .await
                .with_context(|| format!("creating database {database}"))?;
        }
        // Both consumers hold one connection each; one more for counting.
        let pool = PgPoolOptions::new()
            .max_connections(3)
            .connect(&url)
            .await
            .context("connecting to the raw database")?;
        sqlx::query(SCHEMA)
            .execute(&pool)
            .await
            .context("creating raw_offers")?;
        let connection = services.connect_broker().await?;
        let commands = format!("{namespace}.raw2.commands");
        let events = format!("{namespace}.raw2.events");
        let channel = connection.create_channel().await?;
        for queue in [&commands, &events] {
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    services.queue_arguments(),
                )
                .await
                .with_context(|| format!("declaring {queue}"))?;
        }
        let _ = channel.close(200, "OK".into()).await;
        let mut hop = Self {
            connection,
            pool,
            database: database.to_owned(),
            services: services.clone(),
            commands,
            events,
            applied: Arc::new(AtomicU64::new(0)),
            failure: Arc::new(std::sync::Mutex::new(None)),
            consumers: Vec::new(),
        };
        hop.start_consumers().await?;
        Ok(hop)
    }

    async fn start_consumers(&mut self) -> Result<()> {
        // The first hop: insert a batch, publish its events, ack.
        let (channel, mut consumer) = self.consumer(&self.commands).await?;
        let publisher = self.confirm_channel().await?;
        let (pool, events, failure) = (
            self.pool.clone(),
            self.events.clone(),
            Arc::clone(&self.failure),
        );
        self.consumers.push(tokio::spawn(async move {
            let _channel = channel;
            while let Some(batch) = next_batch(&mut consumer).await {
                if let Err(error) = insert_and_forward(&pool, &publisher, &events, batch).await {
                    fail(&failure, format!("first hop: {error:#}"));
                    return;
                }
            }
            // Only a failure ends the stream: `delete` aborts the task.
            fail(&failure, "first hop: the consumer stopped".to_owned());
        }));
        // The second hop: apply a batch of events, ack after commit.
        let (channel, mut consumer) = self.consumer(&self.events).await?;
        let (pool, applied, failure) = (
            self.pool.clone(),
            Arc::clone(&self.applied),
            Arc::clone(&self.failure),
        );
        self.consumers.push(tokio::spawn(async move {
            let _channel = channel;
            while let Some(batch) = next_batch(&mut consumer).await {
                match apply(&pool, batch).await {
                    Ok(rows) => {
                        applied.fetch_add(rows, Ordering::Relaxed);
                    }
                    Err(error) => {
                        fail(&failure, format!("second hop: {error:#}"));
                        return;
                    }
                }
            }
            fail(&failure, "second hop: the consumer stopped".to_owned());
        }));
        Ok(())
    }

    async fn consumer(&self, queue: &str) -> Result<(Channel, bus_rabbitmq::lapin::Consumer)> {
        let channel = self.connection.create_channel().await?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                format!("{queue}-{}", Uuid::new_v4().simple())
                    .as_str()
                    .into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("consuming {queue}"))?;
        Ok((channel, consumer))
    }

    async fn confirm_channel(&self) -> Result<Channel> {
        let channel = self.connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(channel)
    }

    /// Rows applied by the second hop so far.
    pub(crate) fn applied(&self) -> u64 {
        self.applied.load(Ordering::Relaxed)
    }

    fn failed(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|failure| failure.clone())
    }

    /// Publishes `total` commands from `concurrency` publishers (each with
    /// its own confirm channel, one message in flight), then waits until the
    /// second hop has applied all of them.
    pub(crate) async fn end_to_end(
        &self,
        total: usize,
        concurrency: usize,
        timeout: Duration,
    ) -> Result<RawEndToEnd> {
        let before = self.applied();
        let channels = self.publishers(concurrency).await?;
        let next = Arc::new(AtomicUsize::new(0));
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(concurrency);
        for channel in channels {
            let (next, queue) = (Arc::clone(&next), self.commands.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        let _ = channel.close(200, "OK".into()).await;
                        return Ok::<(), anyhow::Error>(());
                    }
                    publish_command(&channel, &queue, n as u64).await?;
                }
            }));
        }
        for task in tasks {
            task.await.context("a publisher panicked")??;
        }
        let publish_seconds = start.elapsed().as_secs_f64();
        let deadline = start + timeout;
        while self.applied() - before < total as u64 {
            if let Some(failure) = self.failed() {
                bail!("raw two hops failed: {failure}");
            }
            if Instant::now() > deadline {
                bail!(
                    "after {timeout:?}: {}/{total} raw messages applied",
                    self.applied() - before
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let applied_seconds = start.elapsed().as_secs_f64();
        Ok(RawEndToEnd {
            messages: total,
            concurrency,
            publish_seconds,
            applied_seconds,
            published_per_second: total as f64 / publish_seconds,
            applied_per_second: total as f64 / applied_seconds,
        })
    }

    /// Closed-loop confirmed publishes of commands for `duration` at
    /// `concurrency`, the consumers applying meanwhile; returns the publish
    /// rate and latency and how many messages were published.
    pub(crate) async fn publish_for(
        &self,
        concurrency: usize,
        duration: Duration,
    ) -> Result<LevelResult> {
        let channels = Arc::new(self.publishers(concurrency).await?);
        let queue = Arc::new(self.commands.clone());
        let op_channels = Arc::clone(&channels);
        let result = closed_loop(concurrency, duration, move |task, n| {
            let (channels, queue) = (Arc::clone(&op_channels), Arc::clone(&queue));
            async move { publish_command(&channels[task], &queue, n).await }
        })
        .await;
        for channel in channels.iter() {
            let _ = channel.close(200, "OK".into()).await;
        }
        Ok(result)
    }

    /// Open-loop confirmed publishes of commands at `rate` per second for
    /// `duration`, round robin over [`OPEN_LOOP_CHANNELS`] confirm channels
    /// (confirms pipelined on each), the consumers applying meanwhile.
    pub(crate) async fn open_loop(&self, rate: f64, duration: Duration) -> Result<LevelResult> {
        let channels = Arc::new(self.publishers(OPEN_LOOP_CHANNELS).await?);
        let queue = Arc::new(self.commands.clone());
        let op_channels = Arc::clone(&channels);
        let result = open_loop(rate, duration, move |n| {
            let (channels, queue) = (Arc::clone(&op_channels), Arc::clone(&queue));
            async move {
                let channel = &channels[n as usize % channels.len()];
                publish_command(channel, &queue, n).await
            }
        })
        .await;
        for channel in channels.iter() {
            let _ = channel.close(200, "OK".into()).await;
        }
        Ok(result)
    }

    /// Waits until the second hop has applied `expected` rows in all.
    pub(crate) async fn wait_applied(&self, expected: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.applied() < expected {
            if let Some(failure) = self.failed() {
                bail!("raw two hops failed: {failure}");
            }
            if Instant::now() > deadline {
                bail!(
                    "raw backlog not drained: {}/{expected} applied",
                    self.applied()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn publishers(&self, concurrency: usize) -> Result<Vec<Channel>> {
        let mut channels = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            channels.push(self.confirm_channel().await?);
        }
        Ok(channels)
    }

    /// Stops the consumers, deletes both queues, closes the connections and
    /// drops the scratch database.
    pub(crate) async fn delete(self) -> Result<()> {
        for consumer in &self.consumers {
            consumer.abort();
        }
        let channel = self.connection.create_channel().await?;
        for queue in [&self.commands, &self.events] {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .with_context(|| format!("deleting {queue}"))?;
        }
        let _ = self.connection.close(200, "OK".into()).await;
        self.pool.close().await;
        processes::drop_database(&self.services, &self.database).await
    }
}

fn fail(failure: &std::sync::Mutex<Option<String>>, message: String) {
    eprintln!("raw two hops: {message}");
    if let Ok(mut failure) = failure.lock() {
        failure.get_or_insert(message);
    }
}

/// Up to [`BATCH`] deliveries: the first as it comes, the others as long as
/// they arrive within [`LINGER`] of it. `None` when the consumer ended or
/// failed.
async fn next_batch(consumer: &mut bus_rabbitmq::lapin::Consumer) -> Option<Vec<Delivery>> {
    let first = consumer.next().await?.ok()?;
    let mut batch = vec![first];
    let deadline = tokio::time::Instant::now() + LINGER;
    while batch.len() < BATCH {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            next = consumer.next() => match next {
                Some(Ok(delivery)) => batch.push(delivery),
                _ => break,
            },
        }
    }
    Some(batch)
}

/// Command number `n`: a fresh offer over 1,000 books, priced as the API's
/// offers are.
async fn publish_command(channel: &Channel, queue: &str, n: u64) -> Result<()> {
    let offer = RawOffer {
        id: Uuid::new_v4(),
        book_id: Uuid::from_u128(u128::from(n % 1_000) + 1),
        seller_id: Uuid::from_u128(u128::from(n % 97) + 1),
        price: (100 + n.wrapping_mul(7919) % 10_000) as f64 / 100.0,
        stock: 1 + (n % 5) as i32,
    };
    publish(channel, queue, &serde_json::to_vec(&offer)?).await
}

/// The first hop's batch: one multi-row insert, commit, one confirmed
/// event per row (confirms awaited together), then an ack per delivery.
async fn insert_and_forward(
    pool: &PgPool,
    publisher: &Channel,
    events: &str,
    batch: Vec<Delivery>,
) -> Result<()> {
    let offers: Vec<RawOffer> = batch
        .iter()
        .map(|delivery| serde_json::from_slice(&delivery.data))
        .collect::<Result<_, _>>()
        .context("decoding a command")?;
    let mut transaction = pool.begin().await?;
    sqlx::query(
        "INSERT INTO raw_offers (id, book_id, seller_id, price, stock)
         SELECT id, book_id, seller_id, price::numeric(12,2), stock
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::float8[], $5::int4[])
              AS t(id, book_id, seller_id, price, stock)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(offers.iter().map(|o| o.id).collect::<Vec<_>>())
    .bind(offers.iter().map(|o| o.book_id).collect::<Vec<_>>())
    .bind(offers.iter().map(|o| o.seller_id).collect::<Vec<_>>())
    .bind(offers.iter().map(|o| o.price).collect::<Vec<_>>())
    .bind(offers.iter().map(|o| o.stock).collect::<Vec<_>>())
    .execute(&mut *transaction)
    .await
    .context("inserting a batch")?;
    transaction.commit().await.context("committing a batch")?;
    let mut confirms = Vec::with_capacity(offers.len());
    for offer in &offers {
        let body = serde_json::to_vec(&RawOfferCreated { id: offer.id })?;
        confirms.push(
            publisher
                .basic_publish(
                    "".into(),
                    events.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &body,
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type("application/json".into()),
                )
                .await?,
        );
    }
    for confirm in confirms {
        match confirm.await? {
            Confirmation::Ack(None) => {}
            other => bail!("event not confirmed: {other:?}"),
        }
    }
    for delivery in &batch {
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}

/// The second hop's batch: one `UPDATE … WHERE id = ANY(…)`, commit, then
/// an ack per delivery. Returns the rows it changed.
async fn apply(pool: &PgPool, batch: Vec<Delivery>) -> Result<u64> {
    let ids: Vec<Uuid> = batch
        .iter()
        .map(|delivery| serde_json::from_slice::<RawOfferCreated>(&delivery.data).map(|e| e.id))
        .collect::<Result<_, _>>()
        .context("decoding an event")?;
    let mut transaction = pool.begin().await?;
    let rows =
        sqlx::query("UPDATE raw_offers SET applied = true WHERE id = ANY($1) AND NOT applied")
            .bind(&ids)
            .execute(&mut *transaction)
            .await
            .context("applying a batch")?
            .rows_affected();
    transaction.commit().await.context("committing a batch")?;
    for delivery in &batch {
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(rows)
}
