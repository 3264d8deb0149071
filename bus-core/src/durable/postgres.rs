//! The queue table on PostgreSQL: any number of processes send and consume.
//!
//! A consumer claims a batch with `FOR NO KEY UPDATE SKIP LOCKED` in a
//! transaction held open while the batch's handlers run, and settles the
//! batch in that transaction: two consumers never hold the same row, and a
//! consumer that dies releases its rows as its connection closes. After
//! inserts commit, `pg_notify('bus_messages', '')` wakes the consumers
//! `LISTEN`ing on that channel. It is sent by a task of its own, one at a
//! time (commits meanwhile share the next one), never in the insert's
//! transaction: PostgreSQL serialises the commits of notifying
//! transactions, which would undo parallel writers.
//!
//! A handler records its message's receipt ([`record_receipts`]) in the
//! transaction of its effect: a `bus_receipts` row referencing the claimed
//! row. The reference takes a `KEY SHARE` lock on that row, which the
//! claim's `NO KEY UPDATE` lock lets through (a `FOR UPDATE` claim would
//! make the handler wait for its own consumer). It also fences a consumer
//! whose claim was lost (its connection closed while its handler still
//! ran): once another consumer recorded the receipt, or settled the row,
//! its receipt fails and its transaction rolls back with the effect.

use std::sync::Arc;

use sqlx::{postgres::PgListener, PgConnection, PgPool, Postgres, Transaction};
use tokio::{
    sync::{watch, Notify},
    task::JoinHandle,
};
use uuid::Uuid;

use super::{Claim, DeadLetterRow, NewMessage, Outcome, Queue, QueuedMessage, Settle, Settled};
use crate::{BoxFuture, Envelope, Receipt};

/// DDL of the queue table, of its receipts and of the paused-queue table
/// it honours, for your migrations.
pub const SCHEMA: &str = "\
CREATE TABLE IF NOT EXISTS bus_messages (
    id           BIGSERIAL   PRIMARY KEY,
    message_id   UUID        NOT NULL,
    message_type TEXT        NOT NULL,
    subscriber   TEXT,
    envelope     JSONB       NOT NULL,
    attempt      INTEGER     NOT NULL DEFAULT 1,
    not_before   TIMESTAMPTZ NOT NULL DEFAULT now(),
    enqueued_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS bus_messages_due ON bus_messages (not_before);
CREATE TABLE IF NOT EXISTS bus_receipts (
    message_row BIGINT      PRIMARY KEY REFERENCES bus_messages (id) ON DELETE CASCADE,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS bus_paused_queues (
    queue     TEXT        PRIMARY KEY,
    paused_at TIMESTAMPTZ NOT NULL,
    paused_by TEXT
);";

/// The channel sends notify and consumers listen on.
const CHANNEL: &str = "bus_messages";

/// The `bus_messages` table of a PostgreSQL database.
pub(crate) struct PostgresQueue {
    pool: PgPool,
    /// Told after each committed insert; the notifier sends `pg_notify`.
    committed: Arc<Notify>,
}

impl PostgresQueue {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            committed: Arc::new(Notify::new()),
        }
    }
}

/// Sends `pg_notify` once after any number of commits told to `committed`,
/// until `stop` flips (consumers of other processes also poll).
async fn notify_commits(pool: PgPool, committed: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = committed.notified() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        if let Err(error) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&pool)
            .await
        {
            tracing::debug!(%error, "cannot notify other consumers; they poll");
        }
    }
}

type Row = (i64, Uuid, String, Option<String>, i32, String, bool);

impl Queue for PostgresQueue {
    fn insert<'a>(&'a self, messages: &'a [NewMessage]) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let mut ids = Vec::with_capacity(messages.len());
            let mut types = Vec::with_capacity(messages.len());
            let mut subscribers = Vec::with_capacity(messages.len());
            let mut envelopes = Vec::with_capacity(messages.len());
            for message in messages {
                ids.push(message.envelope.id);
                types.push(message.envelope.message_type.as_str());
                subscribers.push(message.subscriber.as_deref());
                envelopes.push(message.json.as_ref());
            }
            // One statement, its own transaction.
            sqlx::query(
                "INSERT INTO bus_messages (message_id, message_type, subscriber, envelope)
                 SELECT m, t, s, e::jsonb
                 FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[]) AS x(m, t, s, e)",
            )
            .bind(&ids)
            .bind(&types)
            .bind(&subscribers)
            .bind(&envelopes)
            .execute(&self.pool)
            .await?;
            // After the commit: a consumer woken by it sees the rows.
            self.committed.notify_one();
            Ok(())
        })
    }

    fn max_writers(&self) -> usize {
        usize::MAX
    }

    fn claim(&self, limit: usize) -> BoxFuture<'_, Result<Claim, sqlx::Error>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await?;
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT m.id, m.message_id, m.message_type, m.subscriber, m.attempt, m.envelope::text,
                        EXISTS (SELECT 1 FROM bus_receipts r WHERE r.message_row = m.id)
                 FROM bus_messages m
                 WHERE m.not_before <= now()
                   AND NOT EXISTS (
                     SELECT 1 FROM bus_paused_queues p
                     WHERE p.queue = CASE WHEN m.subscriber IS NULL
                                          THEN 'command.' || m.message_type
                                          ELSE 'event.' || m.message_type || '.' || m.subscriber END)
                 ORDER BY m.id
                 LIMIT $1
                 FOR NO KEY UPDATE OF m SKIP LOCKED",
            )
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
            let messages = rows
                .into_iter()
                .map(
                    |(row, message_id, message_type, subscriber, attempt, envelope, receipted)| {
                        QueuedMessage {
                            row,
                            message_id,
                            message_type,
                            subscriber,
                            attempt: u32::try_from(attempt).unwrap_or(1).max(1),
                            receipted,
                            envelope: serde_json::from_str::<Envelope>(&envelope)
                                .map(Arc::new)
                                .map_err(|_| envelope),
                        }
                    },
                )
                .collect();
            let settle: Box<dyn Settle> = Box::new(PostgresClaim { tx });
            Ok((messages, settle))
        })
    }

    fn dead_letter<'a>(&'a self, row: DeadLetterRow<'a>) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            insert_dead_letter(&mut conn, &row).await
        })
    }

    fn listen(&self, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
        let pool = self.pool.clone();
        tokio::spawn(notify_commits(
            pool.clone(),
            self.committed.clone(),
            stop.clone(),
        ));
        Some(tokio::spawn(async move {
            let mut listener = None;
            loop {
                if listener.is_none() {
                    match PgListener::connect_with(&pool).await {
                        Ok(mut connected) => match connected.listen(CHANNEL).await {
                            Ok(()) => listener = Some(connected),
                            Err(error) => tracing::debug!(%error, "cannot LISTEN yet"),
                        },
                        Err(error) => tracing::debug!(%error, "cannot LISTEN yet"),
                    }
                }
                let Some(connected) = listener.as_mut() else {
                    // The consumer's poll covers the time without a listener.
                    tokio::select! {
                        () = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                        _ = stop.wait_for(|stop| *stop) => break,
                    }
                };
                tokio::select! {
                    received = connected.recv() => match received {
                        Ok(_) => wake.notify_one(),
                        Err(error) => {
                            tracing::debug!(%error, "LISTEN connection lost; reconnecting");
                            listener = None;
                        }
                    },
                    _ = stop.wait_for(|stop| *stop) => break,
                }
            }
        }))
    }
}

/// A claimed batch: its rows stay locked until [`Settle::settle`] commits.
struct PostgresClaim {
    tx: Transaction<'static, Postgres>,
}

impl Settle for PostgresClaim {
    fn settle(
        self: Box<Self>,
        settled: Vec<Settled>,
    ) -> BoxFuture<'static, Result<Vec<i64>, sqlx::Error>> {
        Box::pin(async move {
            let mut tx = self.tx;
            let rows: Vec<i64> = settled.iter().map(|settled| settled.message.row).collect();
            // The receipts of the batch: a row with one is done, whatever
            // its handler answered.
            let receipted: Vec<i64> = if rows.is_empty() {
                Vec::new()
            } else {
                sqlx::query_scalar(
                    "DELETE FROM bus_receipts WHERE message_row = ANY($1) RETURNING message_row",
                )
                .bind(&rows)
                .fetch_all(&mut *tx)
                .await?
            };
            let done = |settled: &Settled| {
                matches!(settled.outcome, Outcome::Ack) || receipted.contains(&settled.message.row)
            };
            let acked: Vec<i64> = settled
                .iter()
                .filter(|settled| done(settled))
                .map(|settled| settled.message.row)
                .collect();
            if !acked.is_empty() {
                sqlx::query("DELETE FROM bus_messages WHERE id = ANY($1)")
                    .bind(&acked)
                    .execute(&mut *tx)
                    .await?;
            }
            for settled in settled.iter().filter(|settled| !done(settled)) {
                let Settled { message, outcome } = settled;
                match outcome {
                    Outcome::Ack | Outcome::Keep => {}
                    Outcome::Retry { after, error } => {
                        sqlx::query(
                            "UPDATE bus_messages
                             SET attempt = attempt + 1,
                                 not_before = now() + $2 * interval '1 millisecond',
                                 last_error = $3
                             WHERE id = $1",
                        )
                        .bind(message.row)
                        .bind(after.as_millis() as f64)
                        .bind(error)
                        .execute(&mut *tx)
                        .await?;
                    }
                    Outcome::DeadLetter { reason } => {
                        sqlx::query("DELETE FROM bus_messages WHERE id = $1")
                            .bind(message.row)
                            .execute(&mut *tx)
                            .await?;
                        insert_dead_letter(&mut tx, &DeadLetterRow::of(message, reason)).await?;
                    }
                }
            }
            tx.commit().await?;
            Ok(receipted)
        })
    }
}

/// Records the receipts of the messages a handler applied, on `conn`: the
/// connection of the transaction that commits their effect
/// (`&mut *transaction`), in one statement. Receipts come from
/// [`MessageContext::durable_receipt`]; with none (the message came from
/// another bus) it does nothing, so a handler calls it whatever bus runs it.
///
/// Once that transaction commits, each message is done: the durable bus
/// deletes its row and receipt without running its handler again, whatever
/// the handler returns and even if the process dies first. Record only the
/// receipts of messages whose effect the transaction holds, not of those
/// to retry or to dead-letter.
///
/// It fails (and the transaction must roll back with its effect) when a
/// receipt of the same message is already recorded, or its row is gone:
/// another consumer handled the message after this one lost its claim.
///
/// ```no_run
/// # async fn handle(pool: sqlx::PgPool, context: bus_core::MessageContext) -> Result<(), sqlx::Error> {
/// let mut tx = pool.begin().await?;
/// // ... the handler's effect, on `&mut *tx` ...
/// bus_core::durable::postgres::record_receipts(&mut tx, context.durable_receipt()).await?;
/// tx.commit().await
/// # }
/// ```
///
/// [`MessageContext::durable_receipt`]: crate::MessageContext::durable_receipt
pub async fn record_receipts(
    conn: &mut PgConnection,
    receipts: impl IntoIterator<Item = Receipt>,
) -> Result<(), sqlx::Error> {
    let rows: Vec<i64> = receipts.into_iter().map(|receipt| receipt.row()).collect();
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query("INSERT INTO bus_receipts (message_row) SELECT UNNEST($1::bigint[])")
        .bind(&rows)
        .execute(conn)
        .await
        .map(drop)
}

async fn insert_dead_letter(
    conn: &mut sqlx::PgConnection,
    row: &DeadLetterRow<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO bus_dead_letters
         (id, message_id, message_type, subscriber, reason, attempts, envelope, dead_lettered_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, now())",
    )
    .bind(Uuid::new_v4())
    .bind(row.message_id)
    .bind(row.message_type)
    .bind(row.subscriber)
    .bind(row.reason)
    .bind(i32::try_from(row.attempts).unwrap_or(i32::MAX))
    .bind(&row.envelope)
    .execute(conn)
    .await
    .map(drop)
}
