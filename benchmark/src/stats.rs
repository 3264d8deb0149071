//! What one measurement gives: latencies recorded in an HDR histogram (the
//! one percentile implementation every phase uses, pgbench's log included)
//! and the rate and percentiles a concurrency level reports.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in microseconds, with three significant digits.
#[derive(Debug, Clone)]
pub(crate) struct Latencies(Histogram<u64>);

/// The longest latency recorded as itself: one hour; longer ones count as
/// one hour.
const HIGHEST_MICROS: u64 = 3_600_000_000;

impl Latencies {
    pub(crate) fn new() -> Self {
        // Fixed bounds rather than auto-resizing: every value then records
        // (clamped at the bounds) and every two histograms add.
        let histogram = Histogram::new_with_bounds(1, HIGHEST_MICROS, 3);
        Self(histogram.expect("1 µs to 1 h at three significant digits are valid bounds"))
    }

    pub(crate) fn record(&mut self, micros: u64) {
        self.0.saturating_record(micros);
    }

    /// Adds every value of `other` (one task's latencies into a level's).
    pub(crate) fn merge(&mut self, other: &Latencies) {
        // Histograms of the same bounds always add.
        let _ = self.0.add(&other.0);
    }

    pub(crate) fn count(&self) -> u64 {
        self.0.len()
    }

    /// Value at quantile `q` (0..=1), in milliseconds; NaN when empty.
    pub(crate) fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.value_at_quantile(q) as f64 / 1000.0
    }
}

/// What one concurrency level measured, on one side.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct LevelResult {
    /// Number of tasks (or pgbench clients) sending at once.
    pub(crate) concurrency: usize,
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    /// Wall time from the start until the last task finished, in seconds.
    pub(crate) seconds: f64,
    /// Successful operations per second.
    pub(crate) rate: f64,
    /// Median latency of the successful operations, in milliseconds.
    pub(crate) p50_ms: f64,
    /// 99th percentile latency of the successful operations, in milliseconds.
    pub(crate) p99_ms: f64,
}

impl LevelResult {
    pub(crate) fn new(
        concurrency: usize,
        latencies: &Latencies,
        errors: u64,
        seconds: f64,
    ) -> Self {
        let ok = latencies.count();
        Self {
            concurrency,
            ok,
            errors,
            seconds,
            rate: if seconds > 0.0 {
                ok as f64 / seconds
            } else {
                0.0
            },
            p50_ms: latencies.quantile_ms(0.50),
            p99_ms: latencies.quantile_ms(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_merged_latencies_are_within_a_tenth_of_a_percent() {
        let (mut first, mut second) = (Latencies::new(), Latencies::new());
        (1..=500).for_each(|micros| first.record(micros));
        (501..=1000).for_each(|micros| second.record(micros));
        second.record(7_200_000_000);
        first.merge(&second);
        let level = LevelResult::new(4, &first, 0, 2.0);
        assert_eq!(level.ok, 1001);
        assert!((level.p50_ms - 0.501).abs() < 0.001, "p50 {}", level.p50_ms);
        assert!((level.p99_ms - 0.991).abs() < 0.001, "p99 {}", level.p99_ms);
        assert!((first.quantile_ms(1.0) - 3_600_000.0).abs() < 3_600.0);
        assert!(Latencies::new().quantile_ms(0.5).is_nan());
    }
}
