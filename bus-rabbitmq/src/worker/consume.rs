//! The consume loop of one queue: pull deliveries, run each in a tracked
//! task within the concurrency limit, each in its own `delivery` span.

use std::sync::Arc;

use futures::StreamExt;
use lapin::{message::Delivery, options::BasicCancelOptions, Channel, Consumer};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use super::{settle::settle, QueueContext};
use crate::wire;

/// Pulls deliveries of one queue and hands each to a tracked task, at most
/// `concurrency` at once. Returns `Ok` once `cancel` fired (after cancelling
/// the consumer), `Err` if the consumer failed.
pub(super) async fn consume_queue(
    context: QueueContext,
    mut consumer: Consumer,
    channel: Channel,
    concurrency: usize,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> Result<(), String> {
    let queue = context.route.queue.clone();
    let permits = Arc::new(Semaphore::new(concurrency));
    loop {
        // While the breaker is open, take nothing new: prefetched deliveries
        // stay unacknowledged in the consumer (held, never dead-lettered)
        // and the broker sends no more past the prefetch.
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = context.breaker.closed() => {}
        }
        let next = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            next = consumer.next() => next,
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => return Err(format!("consumer of {queue} failed: {error}")),
            None => return Err(format!("consumer of {queue} was cancelled by the broker")),
        };
        let permit = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            permit = permits.clone().acquire_owned() => permit,
        };
        let Ok(permit) = permit else { break };
        let context = context.clone();
        tracker.spawn(async move {
            handle(&context, delivery).await;
            drop(permit);
        });
    }
    // Stop the broker delivering more; unstarted deliveries are requeued when
    // the channel closes.
    if let Err(error) = channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
    {
        tracing::debug!(%queue, %error, "cancelling the consumer failed");
    }
    Ok(())
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
