//! What every bus records, through the [`metrics`] facade.
//!
//! bus-core installs no recorder: an application that wants the numbers
//! installs one (the marketplace installs a Prometheus exporter); without
//! one, recording costs a load and a branch. Names follow the OpenTelemetry
//! messaging semantic conventions as Prometheus spells them (dots become
//! underscores, the unit is a suffix). The full list, with labels, is in the
//! crate's README.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::{settlement::Settlement, FailureKind, HandlerError};

/// Counter: messages handed to a transport, by `messaging_destination_name`
/// (the message type) and `outcome` (`sent`, `refused`, `unavailable`).
pub const SENT_MESSAGES: &str = "messaging_client_sent_messages_total";
/// Counter: deliveries a handler ran on, by `messaging_destination_name`
/// and `messaging_consumer_group_name` (the subscriber; `-` for a command).
pub const CONSUMED_MESSAGES: &str = "messaging_client_consumed_messages_total";
/// Histogram (seconds): a publish until the broker confirmed or refused it,
/// by `messaging_operation_name` (`publish`), `messaging_destination_name`
/// and `outcome`.
pub const OPERATION_DURATION: &str = "messaging_client_operation_duration_seconds";
/// Histogram (seconds): the handler's run (middleware included; for a
/// message handled in a batch, the whole batch's run), by
/// `messaging_destination_name`, `outcome` (`ack`, `retry`, `dead_letter`,
/// `suspend`) and, on a failure, `error_type` (`retryable`, `permanent`,
/// `infrastructure`).
pub const PROCESS_DURATION: &str = "messaging_process_duration_seconds";
/// Histogram (seconds): from the envelope's timestamp (the message was
/// created, e.g. accepted by an API) until its handler succeeded, by
/// `messaging_destination_name`.
pub const CRITICAL_TIME: &str = "marketplace_critical_time_seconds";

/// The `outcome` label of a settlement.
pub fn outcome(settlement: &Settlement) -> &'static str {
    match settlement {
        Settlement::Ack => "ack",
        Settlement::Retry { .. } => "retry",
        Settlement::Suspend { .. } => "suspend",
        Settlement::DeadLetter { .. } => "dead_letter",
    }
}

/// The `error_type` label of a failed handler.
pub fn error_type(error: &HandlerError) -> &'static str {
    match error.kind() {
        FailureKind::Retryable => "retryable",
        FailureKind::Permanent => "permanent",
        FailureKind::Infrastructure => "infrastructure",
    }
}

/// Records one delivery of `message_type` to a handler: consumed, how long
/// it ran, how it was settled and, once handled, its critical time.
pub(crate) fn record_settled(
    message_type: &'static str,
    subscriber: Option<&str>,
    result: &Result<(), HandlerError>,
    settlement: &Settlement,
    elapsed: Duration,
    created: DateTime<Utc>,
) {
    let group = subscriber.unwrap_or("-").to_owned();
    metrics::counter!(
        CONSUMED_MESSAGES,
        "messaging_destination_name" => message_type,
        "messaging_consumer_group_name" => group,
    )
    .increment(1);
    let outcome = outcome(settlement);
    match result {
        Ok(()) => metrics::histogram!(
            PROCESS_DURATION,
            "messaging_destination_name" => message_type,
            "outcome" => outcome,
        )
        .record(elapsed.as_secs_f64()),
        Err(error) => metrics::histogram!(
            PROCESS_DURATION,
            "messaging_destination_name" => message_type,
            "outcome" => outcome,
            "error_type" => error_type(error),
        )
        .record(elapsed.as_secs_f64()),
    }
    if matches!(settlement, Settlement::Ack) {
        let waited = (Utc::now() - created).to_std().unwrap_or_default();
        metrics::histogram!(CRITICAL_TIME, "messaging_destination_name" => message_type)
            .record(waited.as_secs_f64());
    }
}

/// Records a message handed to a transport (`outcome`: `sent`, `refused`,
/// `unavailable`), and, when `elapsed` is given, how long the confirmed
/// publish took.
pub fn record_sent(message_type: &str, outcome: &'static str, elapsed: Option<Duration>) {
    let destination = message_type.to_owned();
    if let Some(elapsed) = elapsed {
        metrics::histogram!(
            OPERATION_DURATION,
            "messaging_operation_name" => "publish",
            "messaging_destination_name" => destination.clone(),
            "outcome" => outcome,
        )
        .record(elapsed.as_secs_f64());
    }
    metrics::counter!(
        SENT_MESSAGES,
        "messaging_destination_name" => destination,
        "outcome" => outcome,
    )
    .increment(1);
}
