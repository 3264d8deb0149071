//! The outbox table on SQLite, for single-process applications (an embedded
//! database with an in-memory bus).
//!
//! [`stage`] writes an event in the caller's transaction. The
//! [`OutboxStore`] implementation of [`SqlitePool`] reads committed rows,
//! publishes them, then deletes the published ones; it holds no lock while
//! publishing, because SQLite has a single writer and an in-memory bus may
//! run subscribers (which write) inside `publish`. Two relays on the same
//! file could therefore publish a row twice; delivery is at-least-once
//! anyway, and subscribers must be idempotent.

use sqlx::{types::Json, SqliteConnection, SqlitePool};

use super::{publish_each, OutboxStore};
use crate::{BoxFuture, Envelope, EventBus};

/// DDL of the outbox table, for your migrations.
pub const SCHEMA: &str = "\
CREATE TABLE IF NOT EXISTS bus_outbox (
    position   INTEGER PRIMARY KEY AUTOINCREMENT,
    envelope   TEXT    NOT NULL,
    created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);";

/// Stages `envelope` in the transaction (or connection) `conn`: it is
/// published after, and only if, that transaction commits.
pub async fn stage(conn: &mut SqliteConnection, envelope: &Envelope) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO bus_outbox (envelope) VALUES (?1)")
        .bind(Json(envelope))
        .execute(conn)
        .await?;
    Ok(())
}

impl OutboxStore for SqlitePool {
    fn relay_batch<'a>(
        &'a self,
        bus: &'a dyn EventBus,
        limit: usize,
    ) -> BoxFuture<'a, Result<usize, sqlx::Error>> {
        Box::pin(async move {
            let rows: Vec<(i64, Json<Envelope>)> = sqlx::query_as(
                "SELECT position, envelope FROM bus_outbox ORDER BY position LIMIT ?1",
            )
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self)
            .await?;
            if rows.is_empty() {
                return Ok(0);
            }
            let rows: Vec<(i64, Envelope)> = rows
                .into_iter()
                .map(|(position, Json(envelope))| (position, envelope))
                .collect();
            let published = publish_each(bus, &rows).await;
            // One statement: the positions travel as one JSON array.
            let positions = serde_json::to_string(&published)
                .map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
            sqlx::query(
                "DELETE FROM bus_outbox WHERE position IN (SELECT value FROM json_each(?1))",
            )
            .bind(positions)
            .execute(self)
            .await?;
            Ok(published.len())
        })
    }
}
