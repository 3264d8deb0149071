//! The envelope's version is honoured: an older payload is brought up to
//! date by the registered upcasters, one the consumer cannot read is
//! dead-lettered with the reason.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bus_core::{
    command_fn, AsyncBus, AsyncBusConfig, Command, CommandBus, CommandBusExt, Envelope,
    FailureKind, HandlerError, Handlers, InMemoryDeadLetters, Message, RegistrationError,
    RetryPolicy,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Version 3 of a listing: version 1 had `title`, version 2 renamed it
/// `name`, version 3 added `currency`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ListBook {
    name: String,
    currency: String,
}
impl Message for ListBook {
    const NAME: &'static str = "test.ListBook";
    const VERSION: u32 = 3;
}
impl Command for ListBook {}

/// An envelope of `ListBook` as an older (or newer) producer wrote it.
fn written_at(version: u32, payload: serde_json::Value) -> Envelope {
    let current = Envelope::new(&ListBook {
        name: String::new(),
        currency: String::new(),
    })
    .unwrap();
    bus_core::transport::envelope_from_parts(
        current.id,
        ListBook::NAME,
        version,
        current.timestamp,
        current.headers,
        serde_json::value::to_raw_value(&payload).unwrap(),
    )
}

fn recording_handlers(seen: Arc<Mutex<Vec<(u32, ListBook)>>>) -> bus_core::HandlersBuilder {
    Handlers::builder()
        .command(command_fn(move |book: ListBook, context| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push((context.envelope().version, book));
                Ok(())
            }
        }))
        .upcast::<ListBook>(1, |mut payload| {
            if let Some(title) = payload.get_mut("title").map(serde_json::Value::take) {
                payload["name"] = title;
            }
            payload
        })
        .upcast::<ListBook>(2, |mut payload| {
            payload["currency"] = json!("EUR");
            payload
        })
}

#[tokio::test]
async fn a_version_1_payload_is_upcast_through_every_version_before_the_handler_sees_it() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handlers = recording_handlers(seen.clone()).build().unwrap();
    let handler = handlers.command(ListBook::NAME).unwrap();

    handler
        .invoke(Arc::new(written_at(1, json!({ "title": "Dune" }))), 1, 1)
        .await
        .unwrap();
    handler
        .invoke(Arc::new(written_at(2, json!({ "name": "Emma" }))), 1, 1)
        .await
        .unwrap();

    let book = |name: &str| ListBook {
        name: name.to_owned(),
        currency: "EUR".to_owned(),
    };
    assert_eq!(
        *seen.lock().unwrap(),
        [(3, book("Dune")), (3, book("Emma"))]
    );
}

#[tokio::test]
async fn a_newer_version_than_the_consumer_knows_is_refused_as_permanent() {
    let handlers = recording_handlers(Arc::default()).build().unwrap();

    let error = handlers
        .command(ListBook::NAME)
        .unwrap()
        .invoke(
            Arc::new(written_at(4, json!({ "name": "Dune", "currency": "EUR" }))),
            1,
            1,
        )
        .await
        .unwrap_err();

    assert!(matches!(
        error,
        HandlerError::UnsupportedVersion { version: 4, .. }
    ));
    assert_eq!(error.kind(), FailureKind::Permanent);
    assert_eq!(
        error.to_string(),
        "test.ListBook version 4 is not supported: this consumer reads versions up to 3"
    );
}

#[tokio::test]
async fn an_old_version_without_an_upcaster_path_is_dead_lettered_with_that_reason() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handlers = {
        let seen = seen.clone();
        // Only 2 -> 3 is known: version 1 has no path.
        Handlers::builder()
            .command(command_fn(move |book: ListBook, _| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().push(book);
                    Ok(())
                }
            }))
            .upcast::<ListBook>(2, |mut payload| {
                payload["currency"] = json!("EUR");
                payload
            })
            .build()
            .unwrap()
    };
    let dead_letters = InMemoryDeadLetters::default();
    let bus = AsyncBus::start_with_dead_letters(
        handlers,
        AsyncBusConfig {
            retry: RetryPolicy {
                max_attempts: 3,
                initial_backoff: Duration::from_millis(1),
                multiplier: 1.0,
                max_backoff: Duration::from_millis(1),
            },
            ..AsyncBusConfig::default()
        },
        Arc::new(dead_letters.clone()),
    );

    bus.send_envelope(written_at(1, json!({ "title": "Dune" })))
        .await
        .unwrap();
    bus.send(&ListBook {
        name: "Emma".into(),
        currency: "GBP".into(),
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), bus.shutdown())
        .await
        .expect("the bus drains");

    let letters = dead_letters.list();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 1, "not retried: it can never pass");
    assert_eq!(
        letters[0].error,
        "test.ListBook version 1 is not supported: no upcaster from version 1 to 2"
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "the current version is handled"
    );
}

#[test]
fn two_upcasters_from_the_same_version_are_refused_at_build() {
    let error = recording_handlers(Arc::default())
        .upcast::<ListBook>(1, |payload| payload)
        .build()
        .unwrap_err();

    assert_eq!(
        error,
        RegistrationError::DuplicateUpcaster {
            message_type: "test.ListBook".into(),
            from_version: 1
        }
    );
}
