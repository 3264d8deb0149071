//! The queue table on SQLite, for the one process that owns the file.
//!
//! SQLite has a single writer and the marketplace's handlers write through
//! it, so no transaction is held while handlers run: the one consumer of
//! the process reads due rows, runs them, then settles them in one short
//! transaction. Nothing else consumes the file, so no claim needs to be
//! recorded, and rows left by a process that died are simply read again by
//! the next one. `not_before` is in milliseconds since the Unix epoch.
//!
//! A handler records its message's receipt ([`record_receipts`]) in the
//! transaction of its effect: a `bus_receipts` row naming the queue row,
//! which the next read finds if the process died before settling it.

use std::sync::{Arc, OnceLock};

use sqlx::{SqliteConnection, SqlitePool};
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
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   TEXT    NOT NULL,
    message_type TEXT    NOT NULL,
    subscriber   TEXT,
    envelope     TEXT    NOT NULL,
    attempt      INTEGER NOT NULL DEFAULT 1,
    not_before   INTEGER NOT NULL,
    enqueued_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    last_error   TEXT
);
CREATE INDEX IF NOT EXISTS bus_messages_due ON bus_messages (not_before);
CREATE TABLE IF NOT EXISTS bus_receipts (
    message_row INTEGER PRIMARY KEY REFERENCES bus_messages (id) ON DELETE CASCADE,
    recorded_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS bus_paused_queues (
    queue     TEXT        PRIMARY KEY,
    paused_at TEXT        NOT NULL,
    paused_by TEXT
);";

/// The `bus_messages` table of an SQLite database.
pub(crate) struct SqliteQueue {
    pool: SqlitePool,
}

impl SqliteQueue {
    pub(crate) fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

type Row = (i64, String, String, Option<String>, i64, String, bool);

/// Rows per multi-row `INSERT`: a group is inserted in statements of these
/// sizes, largest first, so a few prepared statements serve every group.
const INSERT_ROWS: [usize; 4] = [64, 16, 4, 1];

/// The largest multi-row `INSERT` for at most `rows` rows (at least one),
/// and how many rows it inserts.
fn insert_statement(rows: usize) -> (usize, &'static str) {
    static STATEMENTS: OnceLock<Vec<String>> = OnceLock::new();
    let statements = STATEMENTS.get_or_init(|| {
        INSERT_ROWS
            .iter()
            .map(|&rows| {
                let values = vec!["(?, ?, ?, ?, ?)"; rows].join(", ");
                format!(
                    "INSERT INTO bus_messages (message_id, message_type, subscriber, envelope, not_before) VALUES {values}"
                )
            })
            .collect()
    });
    let index = INSERT_ROWS
        .iter()
        .position(|&size| size <= rows)
        .unwrap_or(INSERT_ROWS.len() - 1);
    (INSERT_ROWS[index], statements[index].as_str())
}

impl Queue for SqliteQueue {
    fn insert<'a>(&'a self, messages: &'a [NewMessage]) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let now = now_millis();
            let mut tx = self.pool.begin().await?;
            let mut rest = messages;
            while !rest.is_empty() {
                let (rows, sql) = insert_statement(rest.len());
                let (chunk, after) = rest.split_at(rows);
                let mut query = sqlx::query(sql);
                for message in chunk {
                    query = query
                        .bind(message.envelope.id.to_string())
                        .bind(message.envelope.message_type.as_str())
                        .bind(message.subscriber.as_deref())
                        .bind(message.json.as_ref())
                        .bind(now);
                }
                query.execute(&mut *tx).await?;
                rest = after;
            }
            tx.commit().await
        })
    }

    fn max_writers(&self) -> usize {
        1
    }

    fn claim(&self, limit: usize) -> BoxFuture<'_, Result<Claim, sqlx::Error>> {
        Box::pin(async move {
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT m.id, m.message_id, m.message_type, m.subscriber, m.attempt, m.envelope,
                        EXISTS (SELECT 1 FROM bus_receipts r WHERE r.message_row = m.id)
                 FROM bus_messages m
                 WHERE m.not_before <= ?1
                   AND NOT EXISTS (
                     SELECT 1 FROM bus_paused_queues p
                     WHERE p.queue = CASE WHEN m.subscriber IS NULL
                                          THEN 'command.' || m.message_type
                                          ELSE 'event.' || m.message_type || '.' || m.subscriber END)
                 ORDER BY m.id
                 LIMIT ?2",
            )
            .bind(now_millis())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
            let messages = rows
                .into_iter()
                .map(
                    |(row, message_id, message_type, subscriber, attempt, envelope, receipted)| {
                        QueuedMessage {
                            row,
                            message_id: Uuid::parse_str(&message_id).unwrap_or_default(),
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
            let settle: Box<dyn Settle> = Box::new(SqliteClaim {
                pool: self.pool.clone(),
            });
            Ok((messages, settle))
        })
    }

    fn dead_letter<'a>(&'a self, row: DeadLetterRow<'a>) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            insert_dead_letter(&mut conn, &row).await
        })
    }

    fn listen(&self, _wake: Arc<Notify>, _stop: watch::Receiver<bool>) -> Option<JoinHandle<()>> {
        // Every send is made by this process, which wakes its consumer.
        None
    }
}

/// A batch read for settling; nothing is locked meanwhile.
struct SqliteClaim {
    pool: SqlitePool,
}

impl Settle for SqliteClaim {
    fn settle(
        self: Box<Self>,
        settled: Vec<Settled>,
    ) -> BoxFuture<'static, Result<Vec<i64>, sqlx::Error>> {
        Box::pin(async move {
            if settled
                .iter()
                .all(|settled| matches!(settled.outcome, Outcome::Keep))
            {
                // Kept rows are read again; a receipt is found then.
                return Ok(Vec::new());
            }
            let mut tx = self.pool.begin().await?;
            // The receipts of the batch: a row with one is done, whatever
            // its handler answered.
            let rows: Vec<i64> = settled.iter().map(|settled| settled.message.row).collect();
            let receipted: Vec<i64> = sqlx::query_scalar(
                "DELETE FROM bus_receipts
                 WHERE message_row IN (SELECT value FROM json_each(?1))
                 RETURNING message_row",
            )
            .bind(
                serde_json::to_string(&rows)
                    .map_err(|error| sqlx::Error::Encode(Box::new(error)))?,
            )
            .fetch_all(&mut *tx)
            .await?;
            for Settled { message, outcome } in &settled {
                let done = matches!(outcome, Outcome::Ack) || receipted.contains(&message.row);
                match outcome {
                    _ if done => {
                        sqlx::query("DELETE FROM bus_messages WHERE id = ?1")
                            .bind(message.row)
                            .execute(&mut *tx)
                            .await?;
                    }
                    Outcome::Ack | Outcome::Keep => {}
                    Outcome::Retry { after, error } => {
                        let not_before = now_millis()
                            .saturating_add(i64::try_from(after.as_millis()).unwrap_or(i64::MAX));
                        sqlx::query(
                            "UPDATE bus_messages
                             SET attempt = attempt + 1, not_before = ?2, last_error = ?3
                             WHERE id = ?1",
                        )
                        .bind(message.row)
                        .bind(not_before)
                        .bind(error)
                        .execute(&mut *tx)
                        .await?;
                    }
                    Outcome::DeadLetter { reason } => {
                        sqlx::query("DELETE FROM bus_messages WHERE id = ?1")
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
/// receipt of the same message is already recorded, or (with foreign keys
/// on, sqlx's default) its row is gone.
///
/// ```no_run
/// # async fn handle(pool: sqlx::SqlitePool, context: bus_core::MessageContext) -> Result<(), sqlx::Error> {
/// let mut tx = pool.begin().await?;
/// // ... the handler's effect, on `&mut *tx` ...
/// bus_core::durable::sqlite::record_receipts(&mut tx, context.durable_receipt()).await?;
/// tx.commit().await
/// # }
/// ```
///
/// [`MessageContext::durable_receipt`]: crate::MessageContext::durable_receipt
pub async fn record_receipts(
    conn: &mut SqliteConnection,
    receipts: impl IntoIterator<Item = Receipt>,
) -> Result<(), sqlx::Error> {
    let rows: Vec<i64> = receipts.into_iter().map(|receipt| receipt.row()).collect();
    if rows.is_empty() {
        return Ok(());
    }
    let rows =
        serde_json::to_string(&rows).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    sqlx::query("INSERT INTO bus_receipts (message_row) SELECT value FROM json_each(?1)")
        .bind(rows)
        .execute(conn)
        .await
        .map(drop)
}

async fn insert_dead_letter(
    conn: &mut sqlx::SqliteConnection,
    row: &DeadLetterRow<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO bus_dead_letters
         (id, message_id, message_type, subscriber, reason, attempts, envelope, dead_lettered_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .bind(Uuid::new_v4().to_string())
    .bind(row.message_id.to_string())
    .bind(row.message_type)
    .bind(row.subscriber)
    .bind(row.reason)
    .bind(i64::from(row.attempts))
    .bind(&row.envelope)
    .bind(chrono::Utc::now().to_rfc3339())
    .execute(conn)
    .await
    .map(drop)
}
