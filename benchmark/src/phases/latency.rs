//! Latency at a fixed offered load: `POST /offer` started at 25%, 50% and
//! 75% of the API's measured maximum rate (open loop, [`crate::load::open_loop`]),
//! the worker applying meanwhile, beside raw confirmed publishes at the same
//! offered rates with the raw two-hop consumers applying meanwhile.

use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::load::{http_client, offer_body, open_loop, post_offer};
use crate::phases::offers::{drain, measure_api, seed};
use crate::processes::System;
use crate::raw_two_hop::RawTwoHop;
use crate::stats::LevelResult;

/// Offered rates, as fractions of the measured maximum.
pub(crate) const FRACTIONS: [f64; 3] = [0.25, 0.50, 0.75];
/// Concurrency of the closed loop that measures the maximum when no earlier
/// phase did.
const MAX_CONCURRENCY: usize = 64;

/// Both sides at one offered rate.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct RateLevel {
    /// Fraction of the maximum.
    pub(crate) fraction: f64,
    /// Requests (and publishes) started per second.
    pub(crate) offered: f64,
    /// `POST /offer`, the worker applying meanwhile; `concurrency` is the
    /// most requests in flight at once.
    pub(crate) api: LevelResult,
    /// Raw confirmed publishes, the raw consumers applying meanwhile.
    pub(crate) raw: LevelResult,
}

/// The open-loop measurements and the maximum they are fractions of.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Latency {
    /// Accepted `POST /offer` per second with the worker applying
    /// (closed loop at 64): from the applying phase, else measured here.
    pub(crate) max_rate: f64,
    pub(crate) levels: Vec<RateLevel>,
}

/// Measures each of [`FRACTIONS`] of `max_rate` (or of a closed-loop
/// maximum measured first) for `duration` per side, draining each backlog
/// before the next measurement.
pub(crate) async fn run(
    system: &System,
    pool: &PgPool,
    raw: &RawTwoHop,
    max_rate: Option<f64>,
    duration: Duration,
) -> Result<Latency> {
    let client = http_client(8)?;
    let (seller, book) = (Uuid::new_v4(), Uuid::new_v4());
    seed(&client, &system.api_url, seller, book).await?;
    let drain_timeout = Duration::from_secs(600);
    let mut accepted = 0;
    let max_rate = match max_rate {
        Some(rate) => rate,
        None => {
            let level =
                measure_api(&system.api_url, seller, book, MAX_CONCURRENCY, duration).await?;
            accepted += level.ok;
            println!(
                "latency: maximum {:.0} accepted/s at concurrency {MAX_CONCURRENCY}",
                level.rate
            );
            level.rate
        }
    };
    drain(pool, book, accepted).await?;
    system.wait_worker_idle().await?;
    let client = http_client(MAX_CONCURRENCY)?;
    let url = format!("{}/offer", system.api_url);
    let mut levels = Vec::new();
    for fraction in FRACTIONS {
        let offered = (max_rate * fraction).max(1.0);
        let (client, url) = (client.clone(), url.clone());
        let api =
            open_loop(offered, duration, move |n| {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    post_offer(&client, &url, &offer_body(Uuid::new_v4(), book, seller, n)).await
                }
            })
            .await;
        accepted += api.ok;
        drain(pool, book, accepted).await?;
        system.wait_worker_idle().await?;
        let before = raw.applied();
        let raw_level = raw.open_loop(offered, duration).await?;
        raw.wait_applied(before + raw_level.ok, drain_timeout)
            .await?;
        println!(
            "offered {offered:.0}/s ({:.0}% of max): API p50 {:.2} ms p99 {:.2} ms ({} errors, {} in flight at most) | raw p50 {:.2} ms p99 {:.2} ms ({} errors) | p99 API/raw {:.3}",
            fraction * 100.0,
            api.p50_ms,
            api.p99_ms,
            api.errors,
            api.concurrency,
            raw_level.p50_ms,
            raw_level.p99_ms,
            raw_level.errors,
            api.p99_ms / raw_level.p99_ms,
        );
        levels.push(RateLevel {
            fraction,
            offered,
            api,
            raw: raw_level,
        });
    }
    Ok(Latency { max_rate, levels })
}
