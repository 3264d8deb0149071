//! A circuit breaker around a dependency (the database) that consumers
//! share: one infrastructure failure opens it, consumers stop taking new
//! messages while it is open, a probe tries the dependency with backoff and
//! jitter, and the first answer closes it.

use std::{
    fmt,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::bus::BoxFuture;

/// Asks the dependency whether it answers (e.g. `SELECT 1`); `Err` carries
/// what it said.
pub type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Whether consumers behind a [`CircuitBreaker`] take messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// The dependency answers: consume.
    Closed,
    /// The dependency failed: consumers are paused until a probe answers.
    Open {
        /// The infrastructure error that opened it.
        reason: String,
        /// When it opened.
        since: DateTime<Utc>,
    },
}

/// Delays between probes of an open [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Delay before the first probe.
    pub initial_backoff: Duration,
    /// Upper bound of the (doubling) delay between probes.
    pub max_backoff: Duration,
    /// Each delay is drawn at random between `(1 - jitter)` and `1` times
    /// its nominal value (0 to 1), so that many consumers recovering at once
    /// do not probe in step.
    pub jitter: f64,
}

impl Default for BreakerConfig {
    /// 200 ms doubling up to 5 s, half of it jitter.
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            jitter: 0.5,
        }
    }
}

impl BreakerConfig {
    /// The delay before probe `probe` (1-based), jitter applied.
    pub fn delay_before(&self, probe: u32) -> Duration {
        let exponent = probe.saturating_sub(1).min(32) as i32;
        let nominal = (self.initial_backoff.as_secs_f64() * 2f64.powi(exponent)).min(
            self.max_backoff
                .as_secs_f64()
                .max(self.initial_backoff.as_secs_f64()),
        );
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter * fastrand::f64();
        Duration::from_secs_f64((nominal * factor).max(0.0))
    }
}

/// Pauses consumers while a dependency is down.
///
/// A bus (the [`AsyncBus`](crate::AsyncBus), the RabbitMQ worker) that gets
/// a [`FailureKind::Infrastructure`](crate::FailureKind::Infrastructure)
/// result from a handler [`trip`](Self::trip)s the breaker, keeps the
/// message (its attempt not counted) and waits for
/// [`closed`](Self::closed) before running it again; its consume loop waits
/// for it too before taking a new message. The first trip starts one
/// probing task: it calls the probe after each backoff delay
/// ([`BreakerConfig`]) and closes the breaker at the first success. Without
/// a probe, the breaker closes after the first delay and the next message
/// is the probe (half-open).
///
/// Clones share one state: give the same breaker to every consumer that
/// depends on the same database.
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

struct Inner {
    state: watch::Sender<BreakerState>,
    probe: Option<Probe>,
    config: BreakerConfig,
    probing: AtomicBool,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("state", &self.state())
            .field("config", &self.inner.config)
            .field("probe", &self.inner.probe.is_some())
            .finish()
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::new(BreakerConfig::default())
    }
}

impl CircuitBreaker {
    /// A closed breaker without a probe: once open, it closes after one
    /// backoff delay and lets the next message try.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                state: watch::channel(BreakerState::Closed).0,
                probe: None,
                config,
                probing: AtomicBool::new(false),
            }),
        }
    }

    /// A closed breaker that, once open, calls `probe` until it answers.
    pub fn with_probe<F, Fut>(config: BreakerConfig, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        let probe: Probe = Arc::new(move || Box::pin(probe()));
        Self {
            inner: Arc::new(Inner {
                state: watch::channel(BreakerState::Closed).0,
                probe: Some(probe),
                config,
                probing: AtomicBool::new(false),
            }),
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.inner.state.borrow().clone()
    }

    /// Why consumers are paused, or `None` when they run.
    pub fn paused(&self) -> Option<String> {
        match &*self.inner.state.borrow() {
            BreakerState::Closed => None,
            BreakerState::Open { reason, since } => Some(format!(
                "paused since {}: {reason}",
                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
        }
    }

    /// Opens the breaker with `reason` (kept if it is already open) and
    /// starts probing. Must be called within a tokio runtime.
    pub fn trip(&self, reason: &str) {
        let opened = self.inner.state.send_if_modified(|state| match state {
            BreakerState::Closed => {
                *state = BreakerState::Open {
                    reason: reason.to_owned(),
                    since: Utc::now(),
                };
                true
            }
            BreakerState::Open { .. } => false,
        });
        if opened {
            tracing::warn!(%reason, "circuit breaker open: consumers paused until the dependency answers");
        }
        if !self.inner.probing.swap(true, Ordering::SeqCst) {
            let inner = self.inner.clone();
            tokio::spawn(probe_until_closed(inner));
        }
    }

    /// Resolves at once when closed, else when it closes.
    pub async fn closed(&self) {
        let mut state = self.inner.state.subscribe();
        // The sender lives in `self`, so the channel cannot close under us.
        let _ = state
            .wait_for(|state| matches!(state, BreakerState::Closed))
            .await;
    }
}

async fn probe_until_closed(inner: Arc<Inner>) {
    let mut probe_number: u32 = 1;
    loop {
        tokio::time::sleep(inner.config.delay_before(probe_number)).await;
        let answer = match &inner.probe {
            Some(probe) => probe().await,
            None => Ok(()),
        };
        match answer {
            Ok(()) => break,
            Err(error) => {
                tracing::info!(probe = probe_number, %error, "dependency still unavailable");
                probe_number = probe_number.saturating_add(1);
            }
        }
    }
    // Clear `probing` before closing: a trip right after the close starts a
    // new prober instead of finding this one finishing.
    inner.probing.store(false, Ordering::SeqCst);
    let paused_for = match &*inner.state.borrow() {
        BreakerState::Open { since, .. } => (Utc::now() - *since).to_std().unwrap_or_default(),
        BreakerState::Closed => Duration::ZERO,
    };
    inner.state.send_replace(BreakerState::Closed);
    tracing::info!(
        ?paused_for,
        "circuit breaker closed: the dependency answers, consumers resume"
    );
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;

    fn quick() -> BreakerConfig {
        BreakerConfig {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            jitter: 0.5,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_tripped_breaker_stays_open_until_the_probe_answers_then_closes() {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let breaker = CircuitBreaker::with_probe(quick(), move || {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n < 4 {
                    Err("connection refused".to_owned())
                } else {
                    Ok(())
                }
            }
        });
        assert_eq!(breaker.paused(), None);
        breaker.trip("pool timed out");
        let reason = breaker.paused().expect("paused once tripped");
        assert!(reason.ends_with("pool timed out"), "{reason}");
        breaker.trip("another failure keeps the first reason");
        assert!(breaker
            .paused()
            .expect("still paused")
            .ends_with("pool timed out"));
        tokio::time::timeout(Duration::from_secs(5), breaker.closed())
            .await
            .expect("the breaker closes once the probe answers");
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert_eq!(calls.load(Ordering::SeqCst), 4, "probed until it answered");
    }

    #[tokio::test(start_paused = true)]
    async fn a_breaker_can_open_again_after_it_closed() {
        let breaker = CircuitBreaker::new(quick());
        breaker.trip("first outage");
        breaker.closed().await;
        breaker.trip("second outage");
        assert!(breaker
            .paused()
            .expect("open again")
            .ends_with("second outage"));
        breaker.closed().await;
        assert_eq!(breaker.paused(), None);
    }

    #[test]
    fn probe_delays_double_up_to_the_cap_and_jitter_only_shortens_them() {
        let config = BreakerConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
            jitter: 0.5,
        };
        for _ in 0..100 {
            for (probe, nominal) in [(1, 100), (2, 200), (3, 400), (9, 400)] {
                let delay = config.delay_before(probe).as_millis();
                assert!(
                    (nominal / 2..=nominal).contains(&delay),
                    "probe {probe}: {delay} ms outside {}..={nominal}",
                    nominal / 2
                );
            }
        }
        let steady = BreakerConfig {
            jitter: 0.0,
            ..config
        };
        assert_eq!(steady.delay_before(2), Duration::from_millis(200));
    }
}
