//! How a registered handler runs a batch of deliveries: each message through
//! its own chain, the batch handler once for all of them, each result settled
//! on its own. What transports that batch call; see
//! [`BatchHandler`](crate::BatchHandler).

use std::sync::Arc;

use futures::{stream::FuturesUnordered, FutureExt, StreamExt};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::{
    batch::{run_arrivals, Arrival, BatchConfig, BatchSlot},
    registry::RegisteredHandler,
    settlement::{decide, Settlement},
    Envelope, HandlerError, MessageContext, Receipt, RetryPolicy,
};

impl RegisteredHandler {
    /// How transports should collect batches for this handler: `Some` for
    /// a [`BatchHandler`](crate::BatchHandler) registered with more than one message per batch,
    /// `None` for a plain handler (run one message at a time).
    pub fn batch_config(&self) -> Option<BatchConfig> {
        self.batch
            .as_ref()
            .map(|(config, _)| *config)
            .filter(BatchConfig::is_batching)
    }

    /// Runs the handler on several deliveries of its message type, each
    /// `(envelope, attempt)`, and returns one result per delivery, in order.
    ///
    /// Each message goes through its own chain ([`invoke`](Self::invoke):
    /// span, panic catching, middleware, upcasting, decoding); for a
    /// [`BatchHandler`](crate::BatchHandler) those that reach the handler run as one batch, in a
    /// `handle_batch` span naming their ids, split message by message if
    /// the batch fails as a whole (see [`crate::BatchHandler`]). A plain
    /// handler runs them one after the other.
    pub async fn invoke_batch(
        &self,
        deliveries: &[(Arc<Envelope>, u32)],
        max_attempts: u32,
    ) -> Vec<Result<(), HandlerError>> {
        self.invoke_batch_receipted(deliveries, &[], max_attempts)
            .await
    }

    /// [`invoke_batch`](Self::invoke_batch) for deliveries whose contexts
    /// carry `receipts[i]` (the durable bus's rows; none past the end of
    /// `receipts`).
    pub(crate) async fn invoke_batch_receipted(
        &self,
        deliveries: &[(Arc<Envelope>, u32)],
        receipts: &[Option<Receipt>],
        max_attempts: u32,
    ) -> Vec<Result<(), HandlerError>> {
        let receipt = |index: usize| receipts.get(index).copied().flatten();
        let batch = match &self.batch {
            Some((_, batch)) if deliveries.len() > 1 => batch.clone(),
            _ => {
                let mut results = Vec::with_capacity(deliveries.len());
                for (index, (envelope, attempt)) in deliveries.iter().enumerate() {
                    results.push(
                        self.invoke_receipted(
                            envelope.clone(),
                            *attempt,
                            max_attempts,
                            receipt(index),
                        )
                        .await,
                    );
                }
                return results;
            }
        };
        let size = deliveries.len();
        let message_ids = deliveries
            .iter()
            .map(|(envelope, _)| envelope.id.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let span = tracing::info_span!(
            "handle_batch",
            message_type = self.message_type(),
            subscriber = self.subscriber().unwrap_or("-"),
            size,
            message_ids = %message_ids,
        );
        let (arrivals_tx, mut arrivals) = mpsc::unbounded_channel();
        let mut chains: FuturesUnordered<_> = deliveries
            .iter()
            .enumerate()
            .map(|(index, (envelope, attempt))| {
                let slot = BatchSlot {
                    index,
                    arrivals: arrivals_tx.clone(),
                };
                let context = MessageContext::new(envelope.clone(), *attempt, max_attempts)
                    .with_receipt(receipt(index))
                    .in_batch(slot);
                self.run_chain(context).map(move |result| (index, result))
            })
            .collect();
        drop(arrivals_tx);
        let mut results: Vec<Option<Result<(), HandlerError>>> = (0..size).map(|_| None).collect();
        // Whether each chain has arrived at the batch or finished without
        // it; the batch starts once every chain has.
        let mut decided = vec![false; size];
        let mut undecided = size;
        let mut waiting: Vec<Arrival> = Vec::with_capacity(size);
        let mut started = false;
        let mut running = FuturesUnordered::new();
        loop {
            if !started && undecided == 0 {
                started = true;
                if !waiting.is_empty() {
                    let arrived = std::mem::take(&mut waiting);
                    running.push(
                        run_arrivals(batch.clone(), arrived)
                            .instrument(span.clone())
                            .boxed(),
                    );
                }
            }
            tokio::select! {
                Some((index, result)) = chains.next() => {
                    if !decided[index] {
                        decided[index] = true;
                        undecided -= 1;
                    }
                    results[index] = Some(result);
                }
                Some(arrival) = arrivals.recv() => {
                    let index = arrival.index;
                    if results[index].is_some() {
                        // Its chain already gave up waiting (a middleware's
                        // timeout): nobody would read the outcome.
                    } else if started {
                        // Late (a middleware ran the rest of its chain
                        // again): a batch of its own.
                        running.push(
                            run_arrivals(batch.clone(), vec![arrival])
                                .instrument(span.clone())
                                .boxed(),
                        );
                    } else {
                        if !decided[index] {
                            decided[index] = true;
                            undecided -= 1;
                        }
                        waiting.push(arrival);
                    }
                }
                Some(()) = running.next() => {}
                else => break,
            }
        }
        results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    Err(HandlerError::retryable("message left its batch unfinished"))
                })
            })
            .collect()
    }

    /// [`invoke_batch`](Self::invoke_batch), then, per delivery, the
    /// settlement under `policy` ([`decide`]) and the delivery's
    /// [`metrics`](crate::metrics) (with the batch's duration as each
    /// message's handler duration): what every batching bus does with a
    /// batch before applying each settlement in its own terms.
    pub async fn invoke_batch_and_decide(
        &self,
        deliveries: &[(Arc<Envelope>, u32)],
        policy: &RetryPolicy,
    ) -> Vec<(Result<(), HandlerError>, Settlement)> {
        self.invoke_batch_and_decide_receipted(deliveries, &[], policy)
            .await
    }

    /// [`invoke_batch_and_decide`](Self::invoke_batch_and_decide) for
    /// deliveries whose contexts carry `receipts[i]` (the durable bus's
    /// rows).
    pub(crate) async fn invoke_batch_and_decide_receipted(
        &self,
        deliveries: &[(Arc<Envelope>, u32)],
        receipts: &[Option<Receipt>],
        policy: &RetryPolicy,
    ) -> Vec<(Result<(), HandlerError>, Settlement)> {
        let started = std::time::Instant::now();
        let results = self
            .invoke_batch_receipted(deliveries, receipts, policy.max_attempts.max(1))
            .await;
        let elapsed = started.elapsed();
        deliveries
            .iter()
            .zip(results)
            .map(|((envelope, attempt), result)| {
                let settlement = decide(&result, *attempt, policy);
                crate::metrics::record_settled(
                    self.message_type(),
                    self.subscriber(),
                    &result,
                    &settlement,
                    elapsed,
                    envelope.timestamp,
                );
                (result, settlement)
            })
            .collect()
    }
}
