//! Applying the shared settlement to an AMQP delivery: ack, a copy to the
//! delay queue of the backoff, or a copy to the dead-letter queue, each copy
//! confirmed before the delivery is acknowledged.

use std::{sync::Arc, time::Duration};

use bus_core::{
    transport::{settle_span, Settlement},
    Envelope, HandlerError,
};
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions},
    types::{AMQPValue, FieldTable, LongString},
};
use tokio::time::Instant;
use tracing::Instrument;

use super::QueueContext;
use crate::{
    confirm::{publish_confirmed, PublishFailure},
    wire::{self, headers},
    Naming,
};

/// Runs the handler on one delivery and settles it as
/// [`decide`](bus_core::transport::decide) says.
pub(super) async fn settle(context: &QueueContext, delivery: Delivery, attempt: u32) {
    let envelope = match envelope_of(context, &delivery) {
        Ok(envelope) => envelope,
        Err(reason) => {
            dead_letter(context, &delivery, &reason, attempt).await;
            return;
        }
    };
    let envelope = Arc::new(envelope);
    loop {
        let (result, settlement) = context
            .route
            .handler
            .invoke_and_decide(envelope.clone(), attempt, &context.policy)
            .await;
        let again = apply(context, &delivery, result, settlement, attempt)
            .instrument(settle_span(&envelope))
            .await;
        if !again {
            return;
        }
    }
}

/// Applies one delivery's settlement; `true` when it must run again (it
/// was held behind the breaker, which has closed).
async fn apply(
    context: &QueueContext,
    delivery: &Delivery,
    result: Result<(), HandlerError>,
    settlement: Settlement,
    attempt: u32,
) -> bool {
    match settlement {
        Settlement::Ack => ack(delivery, "handled").await,
        Settlement::Retry { after } => {
            let error = result.err().map(|e| e.to_string()).unwrap_or_default();
            retry(context, delivery, &error, attempt, after).await;
        }
        Settlement::DeadLetter { reason } => {
            dead_letter(context, delivery, &reason, attempt).await;
        }
        Settlement::Suspend { reason } => {
            // Held unacknowledged, attempt not counted: run it again once
            // the dependency answers, or give it back to the broker as it
            // came if the worker stops first.
            tracing::warn!(error = %reason, "dependency unavailable: delivery held, attempt not counted");
            context.breaker.trip(&reason);
            tokio::select! {
                () = context.breaker.closed() => return true,
                () = context.stop.cancelled() => release(delivery).await,
            }
        }
        // A settlement this worker does not know yet: give the message
        // back rather than lose it.
        _ => requeue(context, delivery).await,
    }
    false
}

/// The envelope of a delivery of this queue, or why it must be
/// dead-lettered without running the handler: it cannot be decoded, or it is
/// of another type than the queue's handler takes.
fn envelope_of(context: &QueueContext, delivery: &Delivery) -> Result<Envelope, String> {
    let envelope = match wire::decode(&delivery.properties, &delivery.data) {
        Ok(envelope) => envelope,
        // Not a message at all, so no handler result to decide on.
        Err(error) => return Err(format!("undecodable message: {error}")),
    };
    let expected = context.route.handler.message_type();
    if envelope.message_type != expected {
        tracing::warn!(queue = %context.route.queue, %expected, "message of another type on this queue");
        let error = HandlerError::UnknownType {
            message_type: envelope.message_type,
        };
        return Err(error.to_string());
    }
    Ok(envelope)
}

/// Runs the handler on a batch of deliveries in one call and settles each
/// by its own outcome, as [`settle`] does for one: every acknowledgement,
/// retry copy or dead-letter copy is made only after the batch call
/// returned, i.e. after the handler's transaction committed. Deliveries kept
/// on an infrastructure failure are held unacknowledged and run again, as a
/// batch, once the breaker closes (or given back if the worker stops).
pub(super) async fn settle_batch(context: &QueueContext, deliveries: Vec<Delivery>) {
    let mut runnable = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let attempt = wire::attempt(&delivery.properties);
        match envelope_of(context, &delivery) {
            Ok(envelope) => runnable.push((delivery, Arc::new(envelope), attempt)),
            Err(reason) => dead_letter(context, &delivery, &reason, attempt).await,
        }
    }
    while !runnable.is_empty() {
        let inputs: Vec<_> = runnable
            .iter()
            .map(|(_, envelope, attempt)| (envelope.clone(), *attempt))
            .collect();
        let outcomes = context
            .route
            .handler
            .invoke_batch_and_decide(&inputs, &context.policy)
            .await;
        let mut held = Vec::new();
        let mut suspended = None;
        for ((delivery, envelope, attempt), (result, settlement)) in
            runnable.into_iter().zip(outcomes)
        {
            let span = settle_span(&envelope);
            match settlement {
                Settlement::Ack => ack(&delivery, "handled").instrument(span).await,
                Settlement::Retry { after } => {
                    let error = result.err().map(|e| e.to_string()).unwrap_or_default();
                    retry(context, &delivery, &error, attempt, after)
                        .instrument(span)
                        .await;
                }
                Settlement::DeadLetter { reason } => {
                    dead_letter(context, &delivery, &reason, attempt)
                        .instrument(span)
                        .await;
                }
                Settlement::Suspend { reason } => {
                    span.in_scope(|| {
                        tracing::warn!(error = %reason, "dependency unavailable: delivery held, attempt not counted");
                    });
                    suspended = Some(reason);
                    held.push((delivery, envelope, attempt));
                }
                _ => requeue(context, &delivery).instrument(span).await,
            }
        }
        let Some(reason) = suspended else { return };
        tracing::warn!(error = %reason, held = held.len(), "dependency unavailable: deliveries held, attempts not counted");
        context.breaker.trip(&reason);
        tokio::select! {
            () = context.breaker.closed() => runnable = held,
            () = context.stop.cancelled() => {
                for (delivery, _, _) in &held {
                    release(delivery).await;
                }
                return;
            }
        }
    }
}

/// Sends a copy to the delay queue for `delay`, then acknowledges.
async fn retry(
    context: &QueueContext,
    delivery: &Delivery,
    error: &str,
    attempt: u32,
    delay: Duration,
) {
    let retry_queue = Naming::retry_queue(&context.route.queue, delay);
    let mut table = copied_headers(delivery);
    table.insert(headers::ATTEMPT.into(), AMQPValue::LongUInt(attempt + 1));
    table.insert(headers::LAST_ERROR.into(), long_string(error));
    mark_first_failure(&mut table);
    let properties = delivery.properties.clone().with_headers(table);
    match publish_copy(context, &retry_queue, properties, &delivery.data).await {
        Ok(()) => {
            tracing::warn!(%error, retry_in = ?delay, %retry_queue, "handler failed, retry scheduled");
            ack(delivery, "retry scheduled").await;
        }
        Err(failure) => {
            tracing::error!(%error, %failure, "handler failed and the retry could not be scheduled; requeueing");
            requeue(context, delivery).await;
        }
    }
}

/// Parks a copy in the queue's dead-letter queue, then acknowledges.
async fn dead_letter(context: &QueueContext, delivery: &Delivery, error: &str, attempts: u32) {
    let dlq = Naming::dead_letter_queue(&context.route.queue);
    let mut table = copied_headers(delivery);
    table.insert(headers::ERROR.into(), long_string(error));
    table.insert(headers::ATTEMPTS.into(), AMQPValue::LongUInt(attempts));
    table.insert(
        headers::ORIGINAL_QUEUE.into(),
        long_string(&context.route.queue),
    );
    table.insert(
        headers::DEAD_LETTERED_AT.into(),
        long_string(&chrono::Utc::now().to_rfc3339()),
    );
    mark_first_failure(&mut table);
    let properties = delivery.properties.clone().with_headers(table);
    match publish_copy(context, &dlq, properties, &delivery.data).await {
        Ok(()) => {
            let body = String::from_utf8_lossy(&delivery.data);
            tracing::error!(%error, attempts, %dlq, %body, "message dead-lettered");
            ack(delivery, "dead-lettered").await;
        }
        Err(failure) => {
            tracing::error!(%error, %failure, "message could not be dead-lettered; requeueing");
            requeue(context, delivery).await;
        }
    }
}

/// Publishes a copy to `queue` (default exchange) on the queue's confirm
/// channel and waits for its confirm, one copy at a time, within the
/// confirm timeout.
async fn publish_copy(
    context: &QueueContext,
    queue: &str,
    properties: lapin::BasicProperties,
    body: &[u8],
) -> Result<(), PublishFailure> {
    let deadline = Instant::now() + context.confirm_timeout;
    let Ok(_turn) = tokio::time::timeout_at(deadline, context.publish_turn.lock()).await else {
        return Err(PublishFailure::Unavailable {
            reason: "the publish channel stayed busy until the deadline".to_owned(),
            source: None,
        });
    };
    publish_confirmed(
        &context.publish_channel,
        "",
        queue,
        properties,
        body,
        deadline,
    )
    .await
}

/// The delivery's headers, less the broker's own dead-lettering history.
fn copied_headers(delivery: &Delivery) -> FieldTable {
    let mut table = FieldTable::default();
    if let Some(original) = delivery.properties.headers() {
        for (name, value) in original {
            let name_str = name.as_str();
            if name_str.starts_with("x-death")
                || name_str.starts_with("x-first-death")
                || name_str.starts_with("x-last-death")
            {
                continue;
            }
            table.insert(name.clone(), value.clone());
        }
    }
    table
}

/// Records when the message first failed, unless an earlier copy did.
fn mark_first_failure(table: &mut FieldTable) {
    if !table.inner().contains_key(headers::FIRST_FAILED_AT) {
        table.insert(
            headers::FIRST_FAILED_AT.into(),
            long_string(&chrono::Utc::now().to_rfc3339()),
        );
    }
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

async fn ack(delivery: &Delivery, what: &str) {
    match delivery.ack(BasicAckOptions::default()).await {
        Ok(true) => tracing::debug!(outcome = what, "acknowledged"),
        Ok(false) => {
            tracing::warn!(
                outcome = what,
                "channel gone before the ack; the broker will redeliver"
            )
        }
        Err(error) => {
            tracing::warn!(outcome = what, %error, "ack failed; the broker will redeliver")
        }
    }
}

/// Gives every delivery back to the broker at once, unchanged.
pub(super) async fn release_all(deliveries: &[Delivery]) {
    for delivery in deliveries {
        release(delivery).await;
    }
}

/// Gives the delivery back to the broker at once, unchanged (same attempt).
async fn release(delivery: &Delivery) {
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    if let Err(error) = delivery.nack(options).await {
        tracing::warn!(%error, "nack failed; the broker will redeliver");
    }
}

/// Gives the delivery back to the broker, after a pause so that a broken
/// retry or dead-letter path does not spin.
async fn requeue(context: &QueueContext, delivery: &Delivery) {
    tokio::time::sleep(context.failure_pause).await;
    let options = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    if let Err(error) = delivery.nack(options).await {
        tracing::warn!(%error, "nack failed; the broker will redeliver");
    }
}
