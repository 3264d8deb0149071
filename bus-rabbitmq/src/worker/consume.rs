//! The consume loop of one queue: pull deliveries, run each (or, for a batch
//! handler, each batch) in a tracked task within the concurrency limit, in
//! its own `delivery` (`delivery_batch`) span.

use std::sync::Arc;

use futures::StreamExt;
use lapin::{message::Delivery, options::BasicCancelOptions, Channel, Consumer};
use tokio::{sync::Semaphore, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use super::{
    settle::{release_all, settle, settle_batch},
    QueueContext, WorkerControl,
};
use crate::wire;

/// Why a consume loop stopped without failing.
pub(super) enum Stopped {
    /// `cancel` fired (shutdown, or the session ends).
    Cancelled,
    /// The queue was paused: the consumer is cancelled and every handler it
    /// started has settled.
    Paused,
}

/// Pulls deliveries of one queue and hands each to a tracked task, at most
/// `concurrency` at once. Returns once `cancel` fired or the queue is paused
/// in `control` (after cancelling the consumer; when paused, also after its
/// handlers have settled), `Err` if the consumer failed.
pub(super) async fn consume_queue(
    context: QueueContext,
    mut consumer: Consumer,
    channel: Channel,
    concurrency: usize,
    cancel: CancellationToken,
    tracker: TaskTracker,
    control: WorkerControl,
) -> Result<Stopped, String> {
    let queue = context.route.queue.clone();
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut paused = false;
    let batching = context.route.handler.batch_config();
    loop {
        // While the breaker is open, take nothing new: prefetched deliveries
        // stay unacknowledged in the consumer (held, never dead-lettered)
        // and the broker sends no more past the prefetch.
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = control.until_paused(&queue) => { paused = true; break }
            () = context.breaker.closed() => {}
        }
        let next = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = control.until_paused(&queue) => { paused = true; break }
            next = consumer.next() => next,
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => return Err(format!("consumer of {queue} failed: {error}")),
            None => return Err(format!("consumer of {queue} was cancelled by the broker")),
        };
        // A batch handler: keep taking deliveries until the batch is full or
        // its linger has passed since the first. A shutdown or a pause
        // meanwhile stops the collection before the batch started: its
        // deliveries go back to the broker, like every prefetched delivery
        // not yet started.
        let mut batch = vec![delivery];
        let mut failed = None;
        let mut interrupted = None;
        if let Some(config) = batching {
            let deadline = Instant::now() + config.linger;
            while batch.len() < config.max_messages {
                let next = tokio::select! {
                    biased;
                    () = cancel.cancelled() => { interrupted = Some(Stopped::Cancelled); break }
                    () = control.until_paused(&queue) => { interrupted = Some(Stopped::Paused); break }
                    () = tokio::time::sleep_until(deadline) => break,
                    next = consumer.next() => next,
                };
                match next {
                    Some(Ok(delivery)) => batch.push(delivery),
                    Some(Err(error)) => {
                        failed = Some(format!("consumer of {queue} failed: {error}"));
                        break;
                    }
                    None => {
                        failed = Some(format!("consumer of {queue} was cancelled by the broker"));
                        break;
                    }
                }
            }
        }
        if let Some(stopped) = interrupted {
            release_all(&batch).await;
            paused = matches!(stopped, Stopped::Paused);
            break;
        }
        let permit = tokio::select! {
            biased;
            () = cancel.cancelled() => None,
            permit = permits.clone().acquire_owned() => permit.ok(),
        };
        let Some(permit) = permit else {
            // Stopping before it could run: give the collected deliveries
            // back to the broker as they came.
            release_all(&batch).await;
            break;
        };
        let context = context.clone();
        tracker.spawn(async move {
            if batch.len() == 1 {
                for delivery in batch {
                    handle(&context, delivery).await;
                }
            } else {
                handle_batch(&context, batch).await;
            }
            drop(permit);
        });
        if let Some(failure) = failed {
            return Err(failure);
        }
    }
    // Stop the broker delivering more; unstarted deliveries are requeued when
    // the channel closes.
    if let Err(error) = channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
    {
        tracing::debug!(%queue, %error, "cancelling the consumer failed");
    }
    if !paused {
        return Ok(Stopped::Cancelled);
    }
    // Paused: wait until every handler this consumer started has settled,
    // so that closing its channel requeues only unstarted deliveries.
    let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
    tokio::select! {
        biased;
        () = cancel.cancelled() => Ok(Stopped::Cancelled),
        _ = permits.acquire_many(all) => {
            tracing::info!(%queue, "consumer paused: in-flight messages settled, the others wait in the queue");
            Ok(Stopped::Paused)
        }
    }
}

/// Runs the handler on one delivery and settles it: ack, retry or dead letter.
async fn handle(context: &QueueContext, delivery: Delivery) {
    let attempt = wire::attempt(&delivery.properties);
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| "-".to_owned());
    let message_type = delivery
        .properties
        .kind()
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| "-".to_owned());
    // The transport's span: it covers decoding and settlement too; the
    // handler runs in the shared `handle` span inside it.
    let span = tracing::info_span!(
        "delivery",
        %message_id,
        %message_type,
        attempt,
        queue = %context.route.queue,
    );
    settle(context, delivery, attempt).instrument(span).await;
}

/// Runs the handler on a batch of deliveries and settles each one.
async fn handle_batch(context: &QueueContext, deliveries: Vec<Delivery>) {
    let message_ids = deliveries
        .iter()
        .map(|delivery| {
            delivery
                .properties
                .message_id()
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| "-".to_owned())
        })
        .collect::<Vec<_>>()
        .join(",");
    let span = tracing::info_span!(
        "delivery_batch",
        size = deliveries.len(),
        %message_ids,
        queue = %context.route.queue,
    );
    settle_batch(context, deliveries).instrument(span).await;
}
