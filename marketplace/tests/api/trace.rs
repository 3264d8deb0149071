//! One trace per request: the request's `traceparent` reaches the lines of
//! its command's handler, of the relay that publishes its event, of the
//! event's subscriber and of the settlement of a command that fails (its
//! retries, its dead letter); and with `OTEL_EXPORTER_OTLP_ENDPOINT` set,
//! the spans are exported over OTLP with that trace id.

use std::{
    net::TcpListener,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::State, routing::post, Router};
use bus_core::{Message, TraceContext};
use marketplace::{commands::CreateOffer, config::BusKind, events::REFRESH_CHEAPEST_OFFER};
use reqwest::Response;
use serde_json::json;
use tokio::process::Command;
use uuid::Uuid;

use crate::helpers::{logged, LogLine, TestApp};
use crate::on_every_bus;

/// Waits until some line says `message` with every `(field, value)`.
async fn await_line(app: &TestApp, message: &str, fields: &[(&str, &str)]) -> LogLine {
    app.eventually(|| async { logged(message, fields).into_iter().next() })
        .await
}

/// Posts offer `offer` of `book` by `seller` with the `traceparent` of a
/// new root trace; returns that trace and the answer.
async fn post_offer_in_a_new_trace(
    app: &TestApp,
    offer: Uuid,
    book: Uuid,
    seller: Uuid,
) -> (TraceContext, Response) {
    let trace = TraceContext::new_root();
    let body = json!({ "id": offer, "bookId": book, "sellerId": seller, "price": 9.5, "stock": 2 });
    let response = app.post_traced("/offer", &body, &trace).await;
    (trace, response)
}

on_every_bus! {
    async fn the_trace_of_a_request_is_on_the_lines_of_its_command_and_of_its_event(app) {
        let (seller, book, offer) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(app.put_user(seller, "Seller").await.status(), 200);
        assert_eq!(app.put_book(book, "Dune").await.status(), 200);
        app.eventually(|| async {
            (app.get(&format!("/books/{book}")).await.status() == 200
                && app.get(&format!("/users/{seller}")).await.status() == 200)
                .then_some(())
        })
        .await;

        let (trace, response) = post_offer_in_a_new_trace(app, offer, book, seller).await;
        let trace_id = trace.trace_id_hex();
        assert_eq!(response.status(), 200);
        let request_id = response
            .headers()
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .expect("x-request-id")
            .to_owned();

        // The API's line for the request: its trace and its request id.
        let request = await_line(
            app,
            "finished processing request",
            &[("trace_id", &trace_id), ("request_id", &request_id)],
        )
        .await;
        assert_eq!(request.fields["parent_span_id"], trace.span_id_hex());

        // The command's handler, in a span of the same trace whose parent
        // is the request's span.
        let command = await_line(
            app,
            "message handled",
            &[("trace_id", &trace_id), ("message_type", CreateOffer::NAME)],
        )
        .await;
        assert!(command.spans.contains(&"handle"), "{command:?}");
        assert_eq!(command.fields["parent_span_id"], request.fields["span_id"]);
        app.await_commands_applied(&trace, 1).await;

        // The relay publishing its event, and the event's subscriber: the
        // same trace, under the command handler's span.
        let published = await_line(
            app,
            "outbox event published",
            &[("trace_id", &trace_id)],
        )
        .await;
        assert_eq!(published.fields["parent_span_id"], command.fields["span_id"]);
        let subscriber = await_line(
            app,
            "message handled",
            &[("trace_id", &trace_id), ("subscriber", REFRESH_CHEAPEST_OFFER)],
        )
        .await;
        assert_eq!(subscriber.fields["parent_span_id"], command.fields["span_id"]);
        assert_ne!(subscriber.fields["span_id"], command.fields["span_id"]);
    }
}

on_every_bus! {
    async fn the_retries_and_the_dead_letter_of_a_failing_command_carry_its_trace(app) {
        let (seller, offer) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(app.put_user(seller, "Seller").await.status(), 200);
        app.eventually(|| async {
            (app.get(&format!("/users/{seller}")).await.status() == 200).then_some(())
        })
        .await;

        // An offer for a book that never comes.
        let (trace, response) =
            post_offer_in_a_new_trace(app, offer, Uuid::new_v4(), seller).await;
        let trace_id = trace.trace_id_hex();
        let handled = &[("trace_id", trace_id.as_str()), ("message_type", CreateOffer::NAME)];
        if app.bus == BusKind::InMemory {
            // No one to retry for: the failure is the request's answer, and
            // the handler's line is in the request's trace.
            assert_ne!(response.status(), 200);
            await_line(app, "handler failed", handled).await;
            return;
        }
        assert_eq!(response.status(), 200);

        // Each retry and the dead letter are logged after the handler's
        // span closed, in a `settle` span of the same trace whose parent is
        // the request's span, as the handler's.
        let failed = await_line(app, "handler failed", handled).await;
        let retrying = app
            .eventually(|| async {
                ["handler failed, retrying", "handler failed, retry scheduled"]
                    .into_iter()
                    .find_map(|message| logged(message, handled).into_iter().next())
            })
            .await;
        let dead_lettered = await_line(app, "message dead-lettered", handled).await;
        for line in [&retrying, &dead_lettered] {
            assert!(line.spans.contains(&"settle"), "{line:?}");
            assert_eq!(line.fields["parent_span_id"], failed.fields["parent_span_id"], "{line:?}");
            assert_eq!(line.fields["trace_flags"], "01", "{line:?}");
        }
    }
}

/// A stub of an OTLP/HTTP collector: keeps the body of every
/// `POST /v1/traces`.
async fn collector() -> (String, Arc<Mutex<Vec<Bytes>>>) {
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(
                |State(received): State<Arc<Mutex<Vec<Bytes>>>>, body: Bytes| async move {
                    received.lock().expect("received").push(body);
                    ""
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("collector binds");
    let address = listener.local_addr().expect("collector address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), received)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test]
async fn with_an_otlp_endpoint_the_spans_of_a_request_are_exported_with_its_trace_id() {
    let (endpoint, received) = collector().await;
    let cwd = std::env::temp_dir().join(format!("marketplace-otlp-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&cwd).expect("scratch directory");
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port");
    let mut child = Command::new(env!("CARGO_BIN_EXE_marketplace"))
        .current_dir(&cwd)
        .env_remove("DATABASE_URL")
        .env_remove("MARKETPLACE_BUS")
        .env("RUST_LOG", "info")
        .env("MARKETPLACE_LISTEN", format!("127.0.0.1:{port}"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_SERVICE_NAME", "marketplace-test")
        // Batches leave every 100 ms rather than every 5 s.
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("marketplace starts");
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);

    let ready = async {
        loop {
            if let Ok(response) = client.get(format!("{base}/health/ready")).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the API never got ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    ready.await;

    let trace = TraceContext::new_root();
    let response = client
        .put(format!("{base}/user"))
        .header("traceparent", trace.to_string())
        .json(&json!({ "id": Uuid::new_v4(), "name": "Ann" }))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 200);

    // OTLP/protobuf carries ids as raw bytes: the request's span has our
    // trace id, and the caller's span as its parent.
    let trace_id = trace.trace_id.to_be_bytes();
    let parent = trace.span_id.to_be_bytes();
    loop {
        let exported = received
            .lock()
            .expect("received")
            .iter()
            .any(|body| contains(body, &trace_id) && contains(body, &parent));
        if exported {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no span of trace {} reached the collector",
            trace.trace_id_hex()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&cwd);
}
