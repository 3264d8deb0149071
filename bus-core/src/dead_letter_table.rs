//! Listing, replaying and purging the dead letters an
//! [`AsyncBus`](crate::AsyncBus) kept in the `bus_dead_letters` table
//! ([`DatabaseDeadLetters`](crate::DatabaseDeadLetters) writes them).
//!
//! A replay cannot push into the in-memory queue of the process running the
//! bus, so it hands the envelope back through the transactional outbox: in
//! one transaction it stages the envelope in `bus_outbox` (same message id,
//! marked with the one handler it goes back to,
//! [`REDELIVER_TO`](crate::dead_letter_ops::REDELIVER_TO)) and deletes the
//! dead-letter row. The running application's outbox relay then publishes it
//! on the bus, which queues it for that handler as a first attempt. Either
//! both happen or neither: a replay never loses a dead letter nor runs it
//! twice on its own (handlers stay idempotent by the message id anyway).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{
    dead_letter_ops::{
        DeadLetterGroup, DeadLetterRecord, DeadLetterSelector, GroupBy, Redelivery, Summary,
    },
    Envelope,
};

/// Why an operation on the dead-letter table failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterTableError {
    /// The database refused or could not be reached; nothing was changed
    /// (every change runs in one transaction).
    #[error("dead-letter table: {0}")]
    Database(#[from] sqlx::Error),
    /// A row cannot be read (an id or envelope that is not what the table's
    /// writer stores).
    #[error("dead letter {id} cannot be read: {reason}")]
    InvalidRow {
        /// The row's `id`.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The `bus_dead_letters` table of a database, to list, show, replay and
/// purge its dead letters.
///
/// Each dead letter is described as a [`DeadLetterRecord`] whose `queue` is
/// `command.{type}` for a command and `event.{type}.{subscriber}` for one
/// subscriber of an event (the RabbitMQ queue names, without the namespace).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DeadLetterTable {
    /// On PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    /// On SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
}

/// One row, as read before anything is done with it.
struct Row {
    id: String,
    subscriber: Option<String>,
    record: DeadLetterRecord,
}

/// Every dead letter, oldest first, in the columns [`row`] takes (the same
/// statement on PostgreSQL and SQLite).
const LIST_ROWS: &str = "SELECT id, message_id, message_type, subscriber, reason, attempts, \
                         dead_lettered_at FROM bus_dead_letters ORDER BY dead_lettered_at, id";

/// The queue label of a dead letter of `message_type` for `subscriber`.
pub(crate) fn queue_label(message_type: &str, subscriber: Option<&str>) -> String {
    match subscriber {
        Some(subscriber) => format!("event.{message_type}.{subscriber}"),
        None => format!("command.{message_type}"),
    }
}

fn row(
    id: String,
    message_id: Option<Uuid>,
    message_type: String,
    subscriber: Option<String>,
    reason: String,
    attempts: i64,
    dead_lettered_at: Option<DateTime<Utc>>,
) -> Row {
    Row {
        record: DeadLetterRecord {
            queue: queue_label(&message_type, subscriber.as_deref()),
            message_id,
            message_type: Some(message_type),
            reason,
            attempts: u32::try_from(attempts).ok(),
            created_at: None,
            first_failed_at: None,
            dead_lettered_at,
            headers: BTreeMap::new(),
            payload: None,
        },
        id,
        subscriber,
    }
}

/// Fills `record` with what the envelope says.
fn with_envelope(mut record: DeadLetterRecord, envelope: &Envelope) -> DeadLetterRecord {
    record.created_at = Some(envelope.timestamp);
    record.headers = envelope.headers.clone();
    record.payload = Some(crate::dead_letter_ops::payload_value(
        envelope.payload.get().as_bytes(),
    ));
    record
}

impl DeadLetterTable {
    /// Counts the selected dead letters per queue (and reason), with the
    /// oldest and newest dead-lettering time of each group.
    pub async fn summarize(
        &self,
        selector: &DeadLetterSelector,
        group_by: GroupBy,
    ) -> Result<Vec<DeadLetterGroup>, DeadLetterTableError> {
        let mut summary = Summary::new(group_by);
        for row in self.selected(selector).await? {
            summary.add(&row.record);
        }
        Ok(summary.groups())
    }

    /// Every selected dead letter, oldest first, with its envelope's
    /// headers and payload.
    pub async fn find(
        &self,
        selector: &DeadLetterSelector,
    ) -> Result<Vec<DeadLetterRecord>, DeadLetterTableError> {
        let rows = self.selected(selector).await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let envelope = self.envelope(&row.id).await?;
            records.push(match envelope {
                Some(envelope) => with_envelope(row.record, &envelope),
                // Replayed or purged meanwhile.
                None => continue,
            });
        }
        Ok(records)
    }

    /// Replays the selected dead letters: each envelope is staged in the
    /// outbox (same id, attempts starting again at 1, marked for the one
    /// handler that gave up on it) and its row deleted, all in one
    /// transaction. Returns what was replayed (with `dry_run`, what would
    /// be, changing nothing). Rows another replay holds are left to it.
    pub async fn replay(
        &self,
        selector: &DeadLetterSelector,
        dry_run: bool,
    ) -> Result<Vec<DeadLetterRecord>, DeadLetterTableError> {
        self.take(selector, dry_run, true).await
    }

    /// Deletes the selected dead letters, in one transaction. Returns what
    /// was deleted (with `dry_run`, what would be, changing nothing).
    pub async fn purge(
        &self,
        selector: &DeadLetterSelector,
        dry_run: bool,
    ) -> Result<Vec<DeadLetterRecord>, DeadLetterTableError> {
        self.take(selector, dry_run, false).await
    }

    /// The rows `selector` picks, oldest first, without their envelopes.
    async fn selected(
        &self,
        selector: &DeadLetterSelector,
    ) -> Result<Vec<Row>, DeadLetterTableError> {
        let rows = self.rows().await?;
        Ok(rows
            .into_iter()
            .filter(|row| {
                selector.matches(
                    &row.record.queue,
                    None,
                    row.record.message_id,
                    &row.record.reason,
                )
            })
            .collect())
    }

    async fn rows(&self) -> Result<Vec<Row>, DeadLetterTableError> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(pool) => {
                type PgRow = (
                    Uuid,
                    Uuid,
                    String,
                    Option<String>,
                    String,
                    i32,
                    DateTime<Utc>,
                );
                let rows: Vec<PgRow> = sqlx::query_as(LIST_ROWS).fetch_all(pool).await?;
                Ok(rows
                    .into_iter()
                    .map(
                        |(id, message_id, message_type, subscriber, reason, attempts, at)| {
                            row(
                                id.to_string(),
                                Some(message_id),
                                message_type,
                                subscriber,
                                reason,
                                attempts.into(),
                                Some(at),
                            )
                        },
                    )
                    .collect())
            }
            #[cfg(feature = "sqlite")]
            Self::Sqlite(pool) => {
                type LiteRow = (String, String, String, Option<String>, String, i64, String);
                let rows: Vec<LiteRow> = sqlx::query_as(LIST_ROWS).fetch_all(pool).await?;
                Ok(rows
                    .into_iter()
                    .map(
                        |(id, message_id, message_type, subscriber, reason, attempts, at)| {
                            let at = DateTime::parse_from_rfc3339(&at)
                                .ok()
                                .map(|at| at.with_timezone(&Utc));
                            let message_id = Uuid::parse_str(&message_id).ok();
                            row(
                                id,
                                message_id,
                                message_type,
                                subscriber,
                                reason,
                                attempts,
                                at,
                            )
                        },
                    )
                    .collect())
            }
        }
    }

    /// The envelope of row `id`, `None` if the row is gone.
    async fn envelope(&self, id: &str) -> Result<Option<Envelope>, DeadLetterTableError> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(pool) => {
                let key = pg_id(id)?;
                let envelope: Option<sqlx::types::Json<Envelope>> =
                    sqlx::query_scalar("SELECT envelope FROM bus_dead_letters WHERE id = $1")
                        .bind(key)
                        .fetch_optional(pool)
                        .await
                        .map_err(|error| invalid_envelope(id, error))?;
                Ok(envelope.map(|json| json.0))
            }
            #[cfg(feature = "sqlite")]
            Self::Sqlite(pool) => {
                let envelope: Option<String> =
                    sqlx::query_scalar("SELECT envelope FROM bus_dead_letters WHERE id = ?1")
                        .bind(id)
                        .fetch_optional(pool)
                        .await?;
                envelope.map(|text| parse_envelope(id, &text)).transpose()
            }
        }
    }

    /// Replays (`replay`) or deletes the selected rows in one transaction.
    async fn take(
        &self,
        selector: &DeadLetterSelector,
        dry_run: bool,
        replay: bool,
    ) -> Result<Vec<DeadLetterRecord>, DeadLetterTableError> {
        let selected = self.selected(selector).await?;
        if dry_run || selected.is_empty() {
            return Ok(selected.into_iter().map(|row| row.record).collect());
        }
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(pool) => {
                let ids = selected
                    .iter()
                    .map(|row| pg_id(&row.id))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut tx = pool.begin().await?;
                // Rows a concurrent replay or purge holds are its business.
                let locked: Vec<(Uuid, sqlx::types::Json<Envelope>)> = sqlx::query_as(
                    "SELECT id, envelope FROM bus_dead_letters
                     WHERE id = ANY($1) FOR UPDATE SKIP LOCKED",
                )
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?;
                let mut taken = Vec::with_capacity(locked.len());
                for (id, sqlx::types::Json(mut envelope)) in locked {
                    let Some(row) = selected.iter().find(|row| row.id == id.to_string()) else {
                        continue;
                    };
                    if replay {
                        Redelivery::of(row.subscriber.as_deref()).mark(&mut envelope);
                        crate::outbox::postgres::stage(&mut tx, &envelope).await?;
                    }
                    taken.push((id, row.record.clone()));
                }
                let taken_ids: Vec<Uuid> = taken.iter().map(|(id, _)| *id).collect();
                sqlx::query("DELETE FROM bus_dead_letters WHERE id = ANY($1)")
                    .bind(&taken_ids)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(taken.into_iter().map(|(_, record)| record).collect())
            }
            #[cfg(feature = "sqlite")]
            Self::Sqlite(pool) => {
                // SQLite has one writer: the transaction holds the file.
                let mut tx = pool.begin().await?;
                let mut taken = Vec::with_capacity(selected.len());
                for row in selected {
                    let envelope: Option<String> =
                        sqlx::query_scalar("SELECT envelope FROM bus_dead_letters WHERE id = ?1")
                            .bind(&row.id)
                            .fetch_optional(&mut *tx)
                            .await?;
                    let Some(envelope) = envelope else {
                        continue;
                    };
                    if replay {
                        let mut envelope = parse_envelope(&row.id, &envelope)?;
                        Redelivery::of(row.subscriber.as_deref()).mark(&mut envelope);
                        crate::outbox::sqlite::stage(&mut tx, &envelope).await?;
                    }
                    sqlx::query("DELETE FROM bus_dead_letters WHERE id = ?1")
                        .bind(&row.id)
                        .execute(&mut *tx)
                        .await?;
                    taken.push(row.record);
                }
                tx.commit().await?;
                Ok(taken)
            }
        }
    }
}

#[cfg(feature = "postgres")]
fn pg_id(id: &str) -> Result<Uuid, DeadLetterTableError> {
    Uuid::parse_str(id).map_err(|error| DeadLetterTableError::InvalidRow {
        id: id.to_owned(),
        reason: error.to_string(),
    })
}

#[cfg(feature = "postgres")]
fn invalid_envelope(id: &str, error: sqlx::Error) -> DeadLetterTableError {
    match error {
        sqlx::Error::ColumnDecode { source, .. } => DeadLetterTableError::InvalidRow {
            id: id.to_owned(),
            reason: source.to_string(),
        },
        other => DeadLetterTableError::Database(other),
    }
}

#[cfg(feature = "sqlite")]
fn parse_envelope(id: &str, text: &str) -> Result<Envelope, DeadLetterTableError> {
    serde_json::from_str(text).map_err(|error| DeadLetterTableError::InvalidRow {
        id: id.to_owned(),
        reason: format!("envelope is not readable: {error}"),
    })
}
