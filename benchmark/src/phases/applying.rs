//! Accepted `POST /offer` while the worker applies what is accepted,
//! beside raw confirmed publishes while the raw two-hop consumers
//! ([`crate::raw_two_hop`]) apply theirs: what a user sees on a busy
//! system, each side with its consumers sharing the CPUs.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::load::http_client;
use crate::phases::offers::{drain, measure_api, seed};
use crate::processes::System;
use crate::raw_two_hop::RawTwoHop;
use crate::stats::LevelResult;

/// Concurrency of the measurement (that of the end-to-end run).
pub(crate) const CONCURRENCY: usize = 64;

/// Both sides, their consumers applying meanwhile.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Applying {
    /// The API's accepted `POST /offer`, the worker running.
    pub(crate) api: LevelResult,
    /// Offers the worker applied during the API's measurement.
    pub(crate) api_applied: u64,
    /// Raw confirmed publishes, the raw consumers running.
    pub(crate) raw: LevelResult,
    /// Messages the raw second hop applied during the raw measurement.
    pub(crate) raw_applied: u64,
}

/// Measures each side for `duration` at [`CONCURRENCY`], and lets each
/// backlog drain before the other side starts.
pub(crate) async fn run(
    system: &System,
    pool: &PgPool,
    raw: &RawTwoHop,
    duration: Duration,
) -> Result<Applying> {
    let client = http_client(8)?;
    let (seller, book) = (Uuid::new_v4(), Uuid::new_v4());
    seed(&client, &system.api_url, seller, book).await?;
    let drain_timeout = Duration::from_secs(600);
    // Warm up both paths, then start from empty queues.
    let mut accepted = measure_api(&system.api_url, seller, book, 4, Duration::from_secs(1))
        .await?
        .ok;
    drain(pool, book, accepted).await?;
    system.wait_worker_idle().await?;
    let before = raw.applied();
    let warm = raw.publish_for(4, Duration::from_secs(1)).await?;
    raw.wait_applied(before + warm.ok, drain_timeout).await?;

    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM offers WHERE book_id = $1")
            .bind(book)
            .fetch_one(pool)
            .await
            .context("counting offers")
    };
    let before = count().await?;
    let api = measure_api(&system.api_url, seller, book, CONCURRENCY, duration).await?;
    let api_applied = (count().await? - before).max(0) as u64;
    accepted += api.ok;
    drain(pool, book, accepted).await?;
    system.wait_worker_idle().await?;

    let before = raw.applied();
    let raw_level = raw.publish_for(CONCURRENCY, duration).await?;
    let raw_applied = raw.applied() - before;
    raw.wait_applied(before + raw_level.ok, drain_timeout)
        .await?;
    println!(
        "applying meanwhile, c={CONCURRENCY}: API {:.0}/s p50 {:.2} ms p99 {:.2} ms ({} applied meanwhile) | raw {:.0}/s p50 {:.2} ms p99 {:.2} ms ({} applied meanwhile) | API/raw {:.3}",
        api.rate, api.p50_ms, api.p99_ms, api_applied,
        raw_level.rate, raw_level.p50_ms, raw_level.p99_ms, raw_applied,
        api.rate / raw_level.rate,
    );
    Ok(Applying {
        api,
        api_applied,
        raw: raw_level,
        raw_applied,
    })
}
