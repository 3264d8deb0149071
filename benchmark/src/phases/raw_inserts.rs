//! The raw reference of the durable phases: `CreateOffer` envelope rows
//! inserted straight into `bus_messages`, a batch per transaction, due in
//! year 9999 so that no consumer takes them.

use anyhow::{Context, Result};
use bus_core::Envelope;
use chrono::{DateTime, Utc};
use marketplace::commands::create_offer::CreateOffer;
use sqlx::{PgPool, SqlitePool};
use std::time::Duration;
use uuid::Uuid;

use crate::load::{closed_loop, offer_body};
use crate::stats::LevelResult;

/// Year 9999, in milliseconds since the Unix epoch: when raw rows are due
/// (never, for this run).
const NEVER_MILLIS: i64 = 253_402_300_799_000;

/// The database a run measures.
#[derive(Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Db {
    pub(crate) async fn queued(&self) -> Result<i64> {
        let sql = "SELECT count(*) FROM bus_messages";
        match self {
            Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .context("counting queued rows")
    }

    /// Inserts `envelopes` in one transaction, due in year 9999.
    pub(crate) async fn insert(&self, envelopes: &[Envelope]) -> Result<()> {
        match self {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                for envelope in envelopes {
                    sqlx::query(
                        "INSERT INTO bus_messages (message_id, message_type, subscriber, envelope, not_before)
                         VALUES (?1, ?2, NULL, ?3, ?4)",
                    )
                    .bind(envelope.id.to_string())
                    .bind(&envelope.message_type)
                    .bind(serde_json::to_string(envelope)?)
                    .bind(NEVER_MILLIS)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
            Db::Postgres(pool) => {
                let ids: Vec<Uuid> = envelopes.iter().map(|e| e.id).collect();
                let types: Vec<&str> = envelopes.iter().map(|e| e.message_type.as_str()).collect();
                let texts = envelopes
                    .iter()
                    .map(serde_json::to_string)
                    .collect::<Result<Vec<_>, _>>()?;
                let never = DateTime::<Utc>::from_timestamp_millis(NEVER_MILLIS)
                    .context("year 9999 out of range")?;
                // One statement: its implicit transaction holds every row.
                sqlx::query(
                    "INSERT INTO bus_messages (message_id, message_type, subscriber, envelope, not_before)
                     SELECT m, t, NULL, e::jsonb, $4
                     FROM UNNEST($1::uuid[], $2::text[], $3::text[]) AS x(m, t, e)",
                )
                .bind(&ids)
                .bind(&types)
                .bind(&texts)
                .bind(never)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Deletes every row.
    pub(crate) async fn clear(&self) -> Result<()> {
        let sql = "DELETE FROM bus_messages";
        match self {
            Db::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
            Db::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        }
        .context("emptying bus_messages")
    }

    /// Deletes the raw rows.
    pub(crate) async fn delete_raw(&self) -> Result<()> {
        match self {
            Db::Sqlite(pool) => sqlx::query("DELETE FROM bus_messages WHERE not_before >= ?1")
                .bind(NEVER_MILLIS)
                .execute(pool)
                .await
                .map(drop),
            Db::Postgres(pool) => {
                sqlx::query("DELETE FROM bus_messages WHERE not_before > now() + interval '1 year'")
                    .execute(pool)
                    .await
                    .map(drop)
            }
        }
        .context("deleting the raw rows")
    }

    pub(crate) async fn close(&self) {
        match self {
            Db::Sqlite(pool) => pool.close().await,
            Db::Postgres(pool) => pool.close().await,
        }
    }
}

/// `concurrency` clients inserting `rows` envelopes of `CreateOffer` per
/// transaction, for `duration`.
pub(crate) async fn measure_raw(
    db: &Db,
    seller: Uuid,
    book: Uuid,
    concurrency: usize,
    duration: Duration,
    rows: usize,
) -> LevelResult {
    let db = db.clone();
    closed_loop(concurrency, duration, move |task, n| {
        let db = db.clone();
        async move {
            let envelopes = (0..rows as u64)
                .map(|row| {
                    let body =
                        offer_body(Uuid::new_v4(), book, seller, n * 1_000 + row + task as u64);
                    let offer: CreateOffer = serde_json::from_value(body)?;
                    Ok(Envelope::new(&offer)?)
                })
                .collect::<Result<Vec<_>>>()?;
            db.insert(&envelopes).await
        }
    })
    .await
}
