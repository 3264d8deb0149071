//! Where messages that exhausted their retries (or could never succeed) end up.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Utc};

use crate::Envelope;

/// A message a bus gave up on, with why.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The message, untouched.
    pub envelope: Envelope,
    /// The subscriber it was for (`None` for a command).
    pub subscriber: Option<String>,
    /// The last error, as text.
    pub error: String,
    /// How many deliveries were attempted.
    pub attempts: u32,
    /// When it was given up on.
    pub dead_lettered_at: DateTime<Utc>,
}

/// Keeps dead letters. Buses log every dead letter at `ERROR` before
/// handing it here, so none is silent.
pub trait DeadLetterSink: Send + Sync + 'static {
    /// Stores one dead letter. Must not block for long.
    fn store(&self, dead_letter: DeadLetter);
}

/// Keeps the most recent dead letters in memory (bounded, oldest evicted
/// first, evictions logged), for in-memory buses and tests.
#[derive(Debug, Clone)]
pub struct InMemoryDeadLetters {
    inner: Arc<Mutex<VecDeque<DeadLetter>>>,
    capacity: usize,
}

impl Default for InMemoryDeadLetters {
    fn default() -> Self {
        Self::with_capacity(10_000)
    }
}

impl InMemoryDeadLetters {
    /// Keeps at most `capacity` dead letters.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(VecDeque::new())),
            capacity: capacity.max(1),
        }
    }

    /// A copy of the dead letters kept, oldest first.
    pub fn list(&self) -> Vec<DeadLetter> {
        self.lock().iter().cloned().collect()
    }

    /// How many dead letters are kept.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<DeadLetter>> {
        // A panic while holding this lock cannot leave the deque inconsistent.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl DeadLetterSink for InMemoryDeadLetters {
    fn store(&self, dead_letter: DeadLetter) {
        let mut kept = self.lock();
        if kept.len() >= self.capacity {
            if let Some(evicted) = kept.pop_front() {
                tracing::warn!(message_id = %evicted.envelope.id, "in-memory dead-letter store full, evicting the oldest");
            }
        }
        kept.push_back(dead_letter);
    }
}

pub(crate) fn dead_letter(
    sink: &dyn DeadLetterSink,
    envelope: &Envelope,
    subscriber: Option<&str>,
    reason: &str,
    attempts: u32,
) {
    let payload = envelope.payload.get();
    tracing::error!(
        message_id = %envelope.id,
        message_type = %envelope.message_type,
        subscriber = subscriber.unwrap_or("-"),
        attempts,
        error = reason,
        %payload,
        "message dead-lettered"
    );
    sink.store(DeadLetter {
        envelope: envelope.clone(),
        subscriber: subscriber.map(str::to_owned),
        error: reason.to_owned(),
        attempts,
        dead_lettered_at: Utc::now(),
    });
}
