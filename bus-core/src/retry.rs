//! When to try a failed message again.

use std::time::Duration;

/// Attempts and exponential backoff applied to failing handlers.
///
/// Attempt 1 is the first delivery. After a failed attempt `n < max_attempts`
/// the message is tried again after `initial_backoff * multiplier^(n-1)`,
/// capped at `max_backoff`; after attempt `max_attempts` it is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Total deliveries, the first one included (at least 1).
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub initial_backoff: Duration,
    /// Growth factor between consecutive delays (at least 1).
    pub multiplier: f64,
    /// Upper bound of a single delay.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// 8 attempts over about 13 seconds: 100 ms, 200 ms, ... 6.4 s.
    fn default() -> Self {
        Self {
            max_attempts: 8,
            initial_backoff: Duration::from_millis(100),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries: the first failure dead-letters the message.
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The delay before the attempt after failed attempt `attempt` (1-based),
    /// or `None` when the budget is spent.
    pub fn backoff_after(&self, attempt: u32) -> Option<Duration> {
        if attempt >= self.max_attempts.max(1) {
            return None;
        }
        Some(self.delay_after(attempt))
    }

    /// The delay after failed attempt `attempt` (1-based) whatever the
    /// budget: for loops that never give up, such as reconnecting to a
    /// broker.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(63) as i32;
        let factor = self.multiplier.max(1.0).powi(exponent);
        let delay = self.initial_backoff.as_secs_f64() * factor;
        Duration::from_secs_f64(delay.min(self.max_backoff.as_secs_f64()).max(0.0))
    }

    /// Every delay of the schedule, in order (`max_attempts - 1` of them).
    pub fn schedule(&self) -> Vec<Duration> {
        (1..self.max_attempts.max(1))
            .filter_map(|attempt| self.backoff_after(attempt))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_then_stops() {
        let policy = RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            multiplier: 2.0,
            max_backoff: Duration::from_millis(300),
        };
        assert_eq!(
            policy.schedule(),
            [100, 200, 300, 300].map(Duration::from_millis).to_vec()
        );
        assert_eq!(policy.backoff_after(5), None);
        assert_eq!(RetryPolicy::never().backoff_after(1), None);
    }

    #[test]
    fn the_delay_keeps_growing_to_the_cap_past_the_attempt_budget() {
        let policy = RetryPolicy {
            max_attempts: 2,
            initial_backoff: Duration::from_millis(200),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(1),
        };
        assert_eq!(policy.delay_after(1), Duration::from_millis(200));
        assert_eq!(policy.delay_after(3), Duration::from_millis(800));
        assert_eq!(policy.delay_after(u32::MAX), Duration::from_secs(1));
    }
}
