//! The outbox table on PostgreSQL.
//!
//! [`stage`] writes an event in the caller's transaction; the
//! [`OutboxStore`] implementation of [`PgPool`] takes committed rows with
//! `FOR UPDATE SKIP LOCKED` and keeps them locked while they are published,
//! so every worker replica can run a relay: each batch is taken by exactly
//! one relay at a time.

use sqlx::{types::Json, PgConnection, PgPool};

use super::{publish_each, OutboxStore};
use crate::{BoxFuture, Envelope, EventBus};

/// DDL of the outbox table, for your migrations.
pub const SCHEMA: &str = "\
CREATE TABLE IF NOT EXISTS bus_outbox (
    position   BIGSERIAL   PRIMARY KEY,
    envelope   JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);";

/// Stages `envelope` in the transaction (or connection) `conn`: it is
/// published after, and only if, that transaction commits.
pub async fn stage(conn: &mut PgConnection, envelope: &Envelope) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO bus_outbox (envelope) VALUES ($1)")
        .bind(Json(envelope))
        .execute(conn)
        .await?;
    Ok(())
}

impl OutboxStore for PgPool {
    fn relay_batch<'a>(
        &'a self,
        bus: &'a dyn EventBus,
        limit: usize,
    ) -> BoxFuture<'a, Result<usize, sqlx::Error>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let rows: Vec<(i64, Json<Envelope>)> = sqlx::query_as(
                "SELECT position, envelope FROM bus_outbox
                 ORDER BY position LIMIT $1 FOR UPDATE SKIP LOCKED",
            )
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *tx)
            .await?;
            if rows.is_empty() {
                return Ok(0);
            }
            let rows: Vec<(i64, Envelope)> = rows
                .into_iter()
                .map(|(position, Json(envelope))| (position, envelope))
                .collect();
            let published = publish_each(bus, &rows).await;
            sqlx::query("DELETE FROM bus_outbox WHERE position = ANY($1)")
                .bind(&published)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(published.len())
        })
    }
}
