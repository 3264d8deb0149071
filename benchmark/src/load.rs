//! Closed-loop load: N tasks, each sending one request, awaiting its answer,
//! and sending the next, for a fixed duration; open-loop load: requests
//! started at a fixed rate whatever is still in flight; and the offers the
//! write phases send.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use uuid::Uuid;

use crate::stats::{Latencies, LevelResult};

/// Runs `concurrency` tasks calling `op(task, sequence)` back to back for
/// `duration`, and measures throughput and latency of the successful calls.
pub(crate) async fn closed_loop<F, Fut>(
    concurrency: usize,
    duration: Duration,
    op: F,
) -> LevelResult
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let start = Instant::now();
    let deadline = start + duration;
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for task in 0..concurrency {
        let op = op.clone();
        let errors = Arc::clone(&errors);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Latencies::new();
            let mut sequence = 0u64;
            while Instant::now() < deadline {
                let sent = Instant::now();
                match op(task, sequence).await {
                    Ok(()) => latencies.record(sent.elapsed().as_micros() as u64),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                sequence += 1;
            }
            latencies
        }));
    }
    let mut all = Latencies::new();
    for task in tasks {
        if let Ok(latencies) = task.await {
            all.merge(&latencies);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    LevelResult::new(concurrency, &all, errors.load(Ordering::Relaxed), seconds)
}

/// Starts `op(sequence)` at `rate` per second for `duration` (a tokio
/// interval that catches up in bursts when it falls behind), however many
/// calls are still in flight, and measures each call's latency from the
/// moment it was scheduled, so that a stall counts against every call it
/// delayed. The result's `concurrency` is the most calls in flight at once.
pub(crate) async fn open_loop<F, Fut>(rate: f64, duration: Duration, op: F) -> LevelResult
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let period = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut latencies = Latencies::new();
    let mut errors = 0u64;
    let mut in_flight = tokio::task::JoinSet::new();
    let mut most_in_flight = 0;
    let mut settle = |done: Result<(Result<()>, Duration), tokio::task::JoinError>| match done {
        Ok((Ok(()), latency)) => latencies.record(latency.as_micros() as u64),
        _ => errors += 1,
    };
    let start = Instant::now();
    for sequence in 0..total {
        interval.tick().await;
        let scheduled = start + period.mul_f64(sequence as f64);
        let call = op(sequence);
        in_flight.spawn(async move {
            let outcome = call.await;
            (outcome, scheduled.elapsed())
        });
        most_in_flight = most_in_flight.max(in_flight.len());
        while let Some(done) = in_flight.try_join_next() {
            settle(done);
        }
    }
    while let Some(done) = in_flight.join_next().await {
        settle(done);
    }
    let seconds = start.elapsed().as_secs_f64();
    LevelResult::new(most_in_flight, &latencies, errors, seconds)
}

/// An HTTP client whose pool keeps `concurrency` idle connections.
pub(crate) fn http_client(concurrency: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")
}

/// The JSON body of `POST /offer` number `n` on `book` by `seller`: prices
/// spread over 1.00..=100.99, stock 1..=5.
pub(crate) fn offer_body(id: Uuid, book: Uuid, seller: Uuid, n: u64) -> serde_json::Value {
    let cents = 100 + (n.wrapping_mul(7919) % 10_000);
    serde_json::json!({
        "id": id,
        "bookId": book,
        "sellerId": seller,
        "price": cents as f64 / 100.0,
        "stock": 1 + n % 5,
    })
}

/// Sends `POST {api}/offer` and fails unless the answer is a success.
pub(crate) async fn post_offer(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> Result<()> {
    let response = client.post(url).json(body).send().await?;
    if !response.status().is_success() {
        bail!("POST /offer answered {}", response.status());
    }
    Ok(())
}
