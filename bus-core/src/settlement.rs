//! The one policy that decides what happens to a handled message, on every
//! bus.
//!
//! A transport runs the handler through
//! [`RegisteredHandler::invoke`](crate::transport::RegisteredHandler::invoke)
//! (which turns a panic into [`HandlerError::Panicked`]), then asks
//! [`decide`] what to do with the result and applies the answer in its own
//! terms: the AMQP worker acks, publishes to a delay queue or to the
//! dead-letter queue; the async bus drops, re-queues after a sleep or hands
//! to its [`DeadLetterSink`](crate::DeadLetterSink); the sync bus, which has
//! no one to retry for, returns a failed command's error to its caller.
//!
//! Each bus applies the settlement inside the message's [`settle_span`], so
//! that its lines (a retry scheduled, a dead letter, a message kept behind
//! the breaker) carry the trace of the request that sent the message, as
//! the handler's own lines do.

use std::time::Duration;

use crate::{Envelope, FailureKind, HandlerError, RetryPolicy};

/// What to do with a message once its handler has run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settlement {
    /// Done: acknowledge and forget it.
    Ack,
    /// Deliver it again, as the next attempt, after this delay.
    Retry {
        /// How long to wait first.
        after: Duration,
    },
    /// A dependency is down: keep the message (unacknowledged, or requeued
    /// as it was), do not count this attempt, [`trip`] the consumer's
    /// circuit breaker and run it again, as the same attempt, once the
    /// breaker closes. Never dead-lettered.
    ///
    /// [`trip`]: crate::CircuitBreaker::trip
    Suspend {
        /// The infrastructure error, for the log and the breaker's state.
        reason: String,
    },
    /// Give up: keep it as a dead letter with this reason.
    DeadLetter {
        /// Why, for the dead-letter record and the log.
        reason: String,
    },
}

/// Settles the result of delivery `attempt` (1-based) under `policy`.
///
/// | result | settlement |
/// |---|---|
/// | `Ok` | [`Settlement::Ack`] |
/// | [`FailureKind::Retryable`] (incl. a panic), attempts left | [`Settlement::Retry`] after [`RetryPolicy::backoff_after`] |
/// | [`FailureKind::Retryable`], attempts spent | [`Settlement::DeadLetter`] |
/// | [`FailureKind::Permanent`] (incl. decode, unknown type, unsupported version) | [`Settlement::DeadLetter`] |
/// | [`FailureKind::Infrastructure`], whatever the attempt | [`Settlement::Suspend`] |
///
/// The reason of a dead letter is the error's text; transports record the
/// number of attempts beside it.
pub fn decide(result: &Result<(), HandlerError>, attempt: u32, policy: &RetryPolicy) -> Settlement {
    let Err(error) = result else {
        return Settlement::Ack;
    };
    let retry_after = match error.kind() {
        FailureKind::Retryable => policy.backoff_after(attempt),
        FailureKind::Infrastructure => {
            return Settlement::Suspend {
                reason: error.to_string(),
            }
        }
        FailureKind::Permanent => None,
    };
    match retry_after {
        Some(after) => Settlement::Retry { after },
        None => Settlement::DeadLetter {
            reason: error.to_string(),
        },
    }
}

/// The `settle` span of a delivery of `envelope`, for the lines a bus logs
/// while applying its [`Settlement`] (after the handler's `handle` span has
/// closed): the message's id and type, the envelope's `trace_id`, a span id
/// of its own (`span_id`), the span that sent the message as
/// `parent_span_id`, and the trace's `trace_flags` (see
/// [`TraceContext::flags_hex`](crate::TraceContext::flags_hex)). Without a
/// `traceparent` on the envelope, only the message's id and type.
pub fn settle_span(envelope: &Envelope) -> tracing::Span {
    let parent = envelope.trace_context();
    let own = parent.map(|parent| parent.child());
    tracing::info_span!(
        "settle",
        message_id = %envelope.id,
        message_type = %envelope.message_type,
        trace_id = own.map(|own| tracing::field::display(own.trace_id_hex())),
        span_id = own.map(|own| tracing::field::display(own.span_id_hex())),
        parent_span_id = parent.map(|parent| tracing::field::display(parent.span_id_hex())),
        trace_flags = parent.map(|parent| tracing::field::display(parent.flags_hex())),
    )
}

/// The text of a panic payload (what `panic!` was given, when a string).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(1),
        }
    }

    fn decode_error() -> HandlerError {
        HandlerError::Decode {
            message_type: "t.Thing".to_owned(),
            source: serde_json::from_str::<u32>("x").unwrap_err(),
        }
    }

    #[test]
    fn a_success_is_acknowledged_whatever_the_attempt() {
        assert_eq!(decide(&Ok(()), 1, &policy()), Settlement::Ack);
        assert_eq!(decide(&Ok(()), 9, &policy()), Settlement::Ack);
    }

    #[test]
    fn a_retryable_failure_is_retried_with_the_policy_backoff_while_attempts_remain() {
        let failed = Err(HandlerError::retryable("offer not there yet"));
        assert_eq!(
            decide(&failed, 1, &policy()),
            Settlement::Retry {
                after: Duration::from_millis(100)
            }
        );
        assert_eq!(
            decide(&failed, 2, &policy()),
            Settlement::Retry {
                after: Duration::from_millis(200)
            }
        );
    }

    #[test]
    fn a_retryable_failure_on_the_last_attempt_is_dead_lettered_with_its_text() {
        let failed = Err(HandlerError::retryable("offer not there yet"));
        assert_eq!(
            decide(&failed, 3, &policy()),
            Settlement::DeadLetter {
                reason: "offer not there yet".to_owned()
            }
        );
    }

    #[test]
    fn a_panic_is_retried_then_dead_lettered_with_a_reason_naming_the_panic() {
        let panicked = Err(HandlerError::Panicked {
            message: "index out of bounds".to_owned(),
        });
        assert!(matches!(
            decide(&panicked, 1, &policy()),
            Settlement::Retry { .. }
        ));
        let Settlement::DeadLetter { reason } = decide(&panicked, 3, &policy()) else {
            panic!("a panic on the last attempt must be dead-lettered");
        };
        assert_eq!(reason, "handler panicked: index out of bounds");
    }

    #[test]
    fn permanent_failures_are_dead_lettered_on_the_first_attempt() {
        let failures = [
            HandlerError::permanent("isbn already registered"),
            decode_error(),
            HandlerError::UnknownType {
                message_type: "t.Other".to_owned(),
            },
            HandlerError::UnsupportedVersion {
                message_type: "t.Thing".to_owned(),
                version: 3,
                reason: "this consumer reads up to version 2".to_owned(),
            },
        ];
        for error in failures {
            let text = error.to_string();
            assert_eq!(
                decide(&Err(error), 1, &policy()),
                Settlement::DeadLetter { reason: text }
            );
        }
    }

    #[test]
    fn with_a_single_attempt_every_failure_is_dead_lettered_at_once() {
        let never = RetryPolicy::never();
        for error in [
            HandlerError::retryable("busy"),
            HandlerError::Panicked {
                message: "boom".to_owned(),
            },
        ] {
            assert!(matches!(
                decide(&Err(error), 1, &never),
                Settlement::DeadLetter { .. }
            ));
        }
    }

    #[test]
    fn an_infrastructure_failure_suspends_the_message_even_past_its_last_attempt() {
        let down = Err(HandlerError::infrastructure("pool timed out"));
        for attempt in [1, 3, 4, 100] {
            assert_eq!(
                decide(&down, attempt, &policy()),
                Settlement::Suspend {
                    reason: "pool timed out".to_owned()
                }
            );
        }
        assert!(matches!(
            decide(&down, 1, &RetryPolicy::never()),
            Settlement::Suspend { .. }
        ));
    }

    #[test]
    fn a_panic_payload_is_read_whether_str_or_string() {
        let literal: Box<dyn std::any::Any + Send> = Box::new("static text");
        let formatted: Box<dyn std::any::Any + Send> = Box::new(String::from("formatted 7"));
        let other: Box<dyn std::any::Any + Send> = Box::new(7_u8);
        assert_eq!(panic_message(literal.as_ref()), "static text");
        assert_eq!(panic_message(formatted.as_ref()), "formatted 7");
        assert_eq!(panic_message(other.as_ref()), "non-string panic payload");
    }
}
