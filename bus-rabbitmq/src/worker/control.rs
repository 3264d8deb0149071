//! [`WorkerControl`]: pausing and resuming the consumer of one queue while
//! the worker keeps running.

use std::{collections::BTreeSet, sync::Arc};

use tokio::sync::watch;

/// Pauses and resumes the consumers of a [`RabbitWorker`](super::RabbitWorker),
/// one queue at a time, without stopping the worker.
///
/// Pausing a queue stops its consume loop from taking new deliveries, waits
/// until the handlers already running on it have finished and settled
/// (acknowledged, retried or dead-lettered), then cancels the consumer
/// (`basic.cancel`) and closes its channel: the deliveries the broker had
/// prefetched but the worker had not started go back to the queue. Messages
/// published meanwhile wait in the queue; none is lost. Resuming opens a new
/// channel and consumer on the queue.
///
/// The paused set belongs to the worker, not to a connection: a session
/// that reconnects after losing the broker consumes only the queues that
/// are not paused. It lives in memory only; keeping it across a restart is
/// the application's job (read it back and call [`WorkerControl::set_paused`]
/// before [`RabbitWorker::run`](super::RabbitWorker::run)).
///
/// Cloning is cheap: every clone controls the same worker.
#[derive(Debug, Clone)]
pub struct WorkerControl {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Every queue the worker consumes, as the topology names it.
    queues: BTreeSet<String>,
    /// The paused ones.
    paused: watch::Sender<BTreeSet<String>>,
}

/// The queue is not one the worker consumes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the worker consumes no queue named {0}")]
pub struct UnknownQueue(pub String);

/// One consumed queue and whether its consumer is paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueState {
    /// The queue's name, as the topology declares it (with the namespace).
    pub queue: String,
    /// Whether its consumer is paused.
    pub paused: bool,
}

impl WorkerControl {
    /// A control over `queues`, none of them paused.
    pub(super) fn new(queues: impl IntoIterator<Item = String>) -> Self {
        let (paused, _) = watch::channel(BTreeSet::new());
        Self {
            inner: Arc::new(Inner {
                queues: queues.into_iter().collect(),
                paused,
            }),
        }
    }

    /// Whether the worker consumes `queue`.
    pub fn consumes(&self, queue: &str) -> bool {
        self.inner.queues.contains(queue)
    }

    /// Pauses the consumer of `queue`. Returns `true` if it was running,
    /// `false` if it was paused already. Returns at once: the consumer stops
    /// once its in-flight handlers have settled.
    pub fn pause(&self, queue: &str) -> Result<bool, UnknownQueue> {
        self.known(queue)?;
        Ok(self
            .inner
            .paused
            .send_if_modified(|paused| paused.insert(queue.to_owned())))
    }

    /// Resumes the consumer of `queue`. Returns `true` if it was paused,
    /// `false` if it was running already.
    pub fn resume(&self, queue: &str) -> Result<bool, UnknownQueue> {
        self.known(queue)?;
        Ok(self
            .inner
            .paused
            .send_if_modified(|paused| paused.remove(queue)))
    }

    /// Makes exactly `queues` paused (those this worker consumes; other
    /// names are ignored) and every other queue run: for applying a paused
    /// set kept elsewhere (a database shared by several workers).
    pub fn set_paused<'a>(&self, queues: impl IntoIterator<Item = &'a str>) {
        let wanted: BTreeSet<String> = queues
            .into_iter()
            .filter(|queue| self.consumes(queue))
            .map(str::to_owned)
            .collect();
        self.inner.paused.send_if_modified(|paused| {
            let changed = *paused != wanted;
            if changed {
                *paused = wanted;
            }
            changed
        });
    }

    /// The paused queues, in name order.
    pub fn paused(&self) -> Vec<String> {
        self.inner.paused.borrow().iter().cloned().collect()
    }

    /// Whether `queue`'s consumer is paused.
    pub fn is_paused(&self, queue: &str) -> bool {
        self.inner.paused.borrow().contains(queue)
    }

    /// Every consumed queue, in name order, with whether it is paused.
    pub fn queues(&self) -> Vec<QueueState> {
        let paused = self.inner.paused.borrow();
        self.inner
            .queues
            .iter()
            .map(|queue| QueueState {
                queue: queue.clone(),
                paused: paused.contains(queue),
            })
            .collect()
    }

    /// Completes once `queue` is paused (at once if it is).
    pub(super) async fn until_paused(&self, queue: &str) {
        self.until(queue, true).await;
    }

    /// Completes once `queue` is not paused (at once if it is not).
    pub(super) async fn until_resumed(&self, queue: &str) {
        self.until(queue, false).await;
    }

    async fn until(&self, queue: &str, paused: bool) {
        let mut receiver = self.inner.paused.subscribe();
        // The sender lives in `self`, so the channel cannot close meanwhile.
        let _ = receiver.wait_for(|set| set.contains(queue) == paused).await;
    }

    fn known(&self, queue: &str) -> Result<(), UnknownQueue> {
        if self.consumes(queue) {
            Ok(())
        } else {
            Err(UnknownQueue(queue.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control() -> WorkerControl {
        WorkerControl::new(["ns.a".to_owned(), "ns.b".to_owned()])
    }

    #[test]
    fn pausing_and_resuming_a_known_queue_flips_its_state() {
        let control = control();
        assert_eq!(control.pause("ns.a"), Ok(true));
        assert_eq!(control.pause("ns.a"), Ok(false));
        assert_eq!(control.paused(), vec!["ns.a".to_owned()]);
        assert!(control.queues()[0].paused && !control.queues()[1].paused);
        assert_eq!(control.resume("ns.a"), Ok(true));
        assert_eq!(control.resume("ns.a"), Ok(false));
        assert!(control.paused().is_empty());
    }

    #[test]
    fn an_unknown_queue_is_refused_and_ignored_in_a_set() {
        let control = control();
        assert_eq!(control.pause("ns.c"), Err(UnknownQueue("ns.c".to_owned())));
        control.set_paused(["ns.b", "ns.c"]);
        assert_eq!(control.paused(), vec!["ns.b".to_owned()]);
    }

    #[tokio::test]
    async fn waiters_wake_on_the_change() {
        let control = control();
        control.until_resumed("ns.a").await;
        let waiter = tokio::spawn({
            let control = control.clone();
            async move { control.until_paused("ns.a").await }
        });
        control.pause("ns.a").unwrap();
        waiter.await.unwrap();
    }
}
