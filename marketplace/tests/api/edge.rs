//! The HTTP edge under abuse, over real sockets: slow or idle connections
//! are closed, a flood is shed or throttled with problem+json answers that
//! say when to come back, slow reads are cut, every answer carries a
//! request id, and a book's offers come a bounded page at a time.

use std::time::Duration;

use marketplace::config::BusKind;
use reqwest::{Response, StatusCode};
use serde_json::Value;
use sqlx::PgPool;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use uuid::Uuid;

use crate::helpers::{assert_problem, logged, spawn, spawn_app_with, Seeded, TestApp, TestDb};

/// The app's `host:port`.
fn socket_address(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// The value of header `name`, which must be present.
fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("{name} in {:?}", response.headers()))
        .to_str()
        .expect("visible ASCII")
        .to_owned()
}

/// Asserts a `503` problem answered with `Retry-After`; returns the body.
async fn assert_unavailable(response: Response) -> Value {
    let retry_after: u64 = header(&response, "retry-after").parse().expect("seconds");
    assert!(retry_after >= 1);
    assert!(response.headers().contains_key("x-request-id"));
    assert_problem(response, 503).await
}

/// Holds `offers` locked (ACCESS EXCLUSIVE) from the test's own connection
/// until the transaction is dropped or rolled back: every read of a book's
/// offers waits.
async fn lock_offers(pool: &PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut lock = pool.begin().await.expect("transaction");
    sqlx::query("LOCK TABLE offers IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    lock
}

/// Waits until `count` statements of the app wait for a lock.
async fn await_waiting_reads(app: &TestApp, pool: &PgPool, count: i64) {
    app.eventually(|| async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(pool)
        .await
        .ok()?;
        (waiting >= count).then_some(())
    })
    .await;
}

mod connections {
    use super::*;

    /// Sends a request's head to `address` a byte a second; asserts the
    /// server disconnects before it is complete, without an answer.
    async fn assert_a_trickler_is_disconnected(address: &str) {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let request = b"GET /health/live HTTP/1.1\r\nHost: marketplace\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let (mut reader, mut writer) = stream.split();
        let trickle = async {
            for byte in request {
                if writer.write_all(&[*byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        let mut answer = Vec::new();
        // The stream ends (or is reset) before the trickle is over.
        let closed = tokio::select! {
            _ = reader.read_to_end(&mut answer) => true,
            () = trickle => false,
        };
        assert!(closed, "disconnected before the headers were complete");
        assert!(
            answer.is_empty(),
            "no answer: {}",
            String::from_utf8_lossy(&answer)
        );
    }

    /// A client trickling its request's headers (slowloris) is disconnected
    /// once the header-read timeout has passed, without an answer.
    #[tokio::test]
    async fn a_client_trickling_its_headers_is_disconnected() {
        let app = spawn(
            TestDb::sqlite().await,
            BusKind::InMemory,
            &["--header-read-timeout", "1s"],
        )
        .await;
        assert_a_trickler_is_disconnected(&socket_address(&app)).await;
        app.shutdown().await;
    }

    /// A worker's health port holds its connections as the API does: a
    /// trickling client is disconnected there too.
    #[sqlx::test(migrator = "marketplace::MIGRATOR")]
    async fn the_workers_health_port_disconnects_a_trickling_client(pool: PgPool) {
        let app = spawn_app_with(pool, BusKind::Rabbitmq, &["--header-read-timeout", "1s"]).await;
        let health = app.worker_health_address().expect("a worker").to_owned();
        let live = app
            .client
            .get(format!("http://{health}/health/live"))
            .send()
            .await
            .unwrap();
        assert_eq!(live.status(), StatusCode::OK);
        assert_a_trickler_is_disconnected(&health).await;
        app.shutdown().await;
    }

    /// A keep-alive connection idle past the idle timeout is closed; one
    /// request on it was answered first.
    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        let app = spawn(
            TestDb::sqlite().await,
            BusKind::InMemory,
            &["--idle-timeout", "1s", "--header-read-timeout", "30s"],
        )
        .await;
        let mut stream = TcpStream::connect(socket_address(&app)).await.unwrap();
        stream
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: marketplace\r\n\r\n")
            .await
            .unwrap();
        // The answer, then the end of the stream once the connection has
        // been idle for a second (the header timeout is far away).
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer))
            .await
            .expect("closed well before the header-read timeout");
        assert!(read.is_ok(), "{read:?}");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("x-request-id"), "{answer}");
        app.shutdown().await;
    }
}

mod load {
    use super::*;

    /// Past `--max-in-flight`, a request is answered 503 at once, while the
    /// requests in flight go on and are answered once they can.
    #[sqlx::test(migrator = "marketplace::MIGRATOR")]
    async fn past_the_requests_in_flight_a_request_is_shed_at_once(pool: PgPool) {
        let app = spawn_app_with(
            pool.clone(),
            BusKind::InMemory,
            &[
                "--max-in-flight",
                "2",
                "--read-statement-timeout",
                "0",
                "--request-timeout",
                "60s",
            ],
        )
        .await;
        let Seeded { book, .. } = app.seed_offer(10.0, 1).await;
        let lock = lock_offers(&pool).await;
        let path = format!("{}/offers/{book}", app.address);
        let held: Vec<_> = (0..2)
            .map(|_| tokio::spawn(app.client.get(&path).send()))
            .collect();
        await_waiting_reads(&app, &pool, 2).await;

        let problem = assert_unavailable(app.get(&format!("/books/{book}")).await).await;
        assert_eq!(problem["type"], "/problems/overloaded", "{problem}");
        // Liveness is never shed.
        assert_eq!(app.get("/health/live").await.status(), StatusCode::OK);

        lock.rollback().await.unwrap();
        for request in held {
            let response = request.await.unwrap().expect("answered");
            assert_eq!(response.status(), StatusCode::OK);
        }
        assert_eq!(
            app.get(&format!("/books/{book}")).await.status(),
            StatusCode::OK
        );
        app.shutdown().await;
    }

    /// A burst past a client's allowance is answered 429 with when to come
    /// back; the allowance is advertised on every limited answer; probes
    /// and the OpenAPI document are exempt.
    #[tokio::test]
    async fn a_burst_past_the_rate_limit_is_answered_429() {
        let app = spawn(
            TestDb::sqlite().await,
            BusKind::InMemory,
            &["--rate-limit-per-second", "1", "--rate-limit-burst", "3"],
        )
        .await;
        let first = app.get("/books").await;
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(header(&first, "ratelimit-policy"), "\"per-client\";q=3;w=3");
        let limit = header(&first, "ratelimit");
        assert!(limit.starts_with("\"per-client\";r=2;t="), "{limit}");

        let mut throttled = None;
        for _ in 0..20 {
            let response = app.get("/books").await;
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                throttled = Some(response);
                break;
            }
        }
        let response = throttled.expect("a burst of 20 is throttled");
        let retry_after: u64 = header(&response, "retry-after").parse().unwrap();
        assert!((1..=3).contains(&retry_after), "{retry_after}");
        assert_eq!(
            header(&response, "ratelimit-policy"),
            "\"per-client\";q=3;w=3"
        );
        assert_eq!(
            header(&response, "ratelimit"),
            format!("\"per-client\";r=0;t={retry_after}")
        );
        assert!(response.headers().contains_key("x-request-id"));
        let problem = assert_problem(response, 429).await;
        assert_eq!(problem["type"], "/problems/rate-limited");

        for exempt in ["/health/live", "/health/ready", "/openapi.json"] {
            let response = app.get(exempt).await;
            assert_eq!(response.status(), StatusCode::OK, "{exempt}");
            assert!(!response.headers().contains_key("ratelimit"), "{exempt}");
        }
        app.shutdown().await;
    }
}

mod proxies {
    use super::*;

    /// A GET of `/books` said to be forwarded for `chain` (an
    /// `X-Forwarded-For` value).
    async fn forwarded_for(app: &TestApp, chain: &str) -> Response {
        app.client
            .get(format!("{}/books", app.address))
            .header("x-forwarded-for", chain)
            .send()
            .await
            .expect("request sent")
    }

    /// Sends requests forwarded for `chain` until one is answered 429.
    async fn exhaust(app: &TestApp, chain: &str) {
        for _ in 0..20 {
            if forwarded_for(app, chain).await.status() == StatusCode::TOO_MANY_REQUESTS {
                return;
            }
        }
        panic!("a burst of 20 forwarded for {chain} is throttled");
    }

    const LIMIT: [&str; 4] = ["--rate-limit-per-second", "1", "--rate-limit-burst", "2"];

    /// Behind a trusted proxy, clients told apart by `X-Forwarded-For` each
    /// have their own bucket: one that is throttled does not throttle the
    /// other, and it cannot escape its own by forging addresses to the left
    /// of the one the proxy appended.
    #[tokio::test]
    async fn clients_behind_a_trusted_proxy_each_have_their_own_bucket() {
        let flags = [&["--trusted-proxies", "127.0.0.1/32"][..], &LIMIT].concat();
        let app = spawn(TestDb::sqlite().await, BusKind::InMemory, &flags).await;
        exhaust(&app, "203.0.113.1").await;
        let forged = forwarded_for(&app, "203.0.113.2, 203.0.113.1").await;
        assert_problem(forged, 429).await;

        let other = forwarded_for(&app, "203.0.113.2").await;
        assert_eq!(other.status(), StatusCode::OK);
        assert!(header(&other, "ratelimit").starts_with("\"per-client\";r=1;"));
        app.shutdown().await;
    }

    /// Without trusted proxies `X-Forwarded-For` is ignored: a client
    /// cannot escape its limit by sending it.
    #[tokio::test]
    async fn without_trusted_proxies_the_forwarded_address_is_ignored() {
        let app = spawn(TestDb::sqlite().await, BusKind::InMemory, &LIMIT).await;
        exhaust(&app, "203.0.113.1").await;
        assert_problem(forwarded_for(&app, "203.0.113.2").await, 429).await;
        app.shutdown().await;
    }
}

mod openapi {
    use super::*;

    /// Every operation of `/openapi.json` lists what the edge may answer:
    /// `429` on rate-limited routes, `503` on routes that can be shed or
    /// time out, both problem+json with `Retry-After`; every answer lists
    /// `x-request-id`. The probes list only what they can answer.
    #[tokio::test]
    async fn the_openapi_document_lists_the_answers_of_the_edge() {
        let app = spawn(TestDb::sqlite().await, BusKind::InMemory, &[]).await;
        let document = app.get_json("/openapi.json").await;
        let resolve = |response: &Value| -> Value {
            match response["$ref"].as_str() {
                Some(reference) => {
                    let name = reference.trim_start_matches("#/components/responses/");
                    document["components"]["responses"][name].clone()
                }
                None => response.clone(),
            }
        };
        let mut operations = 0;
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                for (status, response) in responses {
                    let response = resolve(response);
                    assert!(
                        response["headers"].get("x-request-id").is_some(),
                        "{method} {path} {status}: {response}"
                    );
                }
                if path.starts_with("/health/") {
                    continue;
                }
                operations += 1;
                let limited = resolve(&responses["429"]);
                for name in ["Retry-After", "RateLimit-Policy", "RateLimit"] {
                    assert!(limited["headers"].get(name).is_some(), "{path} 429 {name}");
                }
                let unavailable = resolve(&responses["503"]);
                assert!(
                    unavailable["headers"].get("Retry-After").is_some(),
                    "{path}"
                );
                let description = unavailable["description"].as_str().unwrap();
                assert!(description.contains("/problems/overloaded"), "{path}");
                assert!(description.contains("/problems/timeout"), "{path}");
                for problem in [limited, unavailable] {
                    assert_eq!(
                        problem["content"]["application/problem+json"]["schema"]["$ref"],
                        "#/components/schemas/Problem",
                        "{method} {path}"
                    );
                }
                let ok = resolve(&responses["200"]);
                assert!(ok["headers"].get("RateLimit").is_some(), "{path}");
            }
        }
        assert!(operations >= 9, "{operations} operations");

        let probe = |path: &str| document["paths"][path]["get"]["responses"].clone();
        let live = probe("/health/live");
        assert!(
            live.get("429").is_none() && live.get("503").is_none(),
            "{live}"
        );
        assert!(live["200"]["headers"].get("RateLimit").is_none(), "{live}");
        let ready = probe("/health/ready");
        assert!(ready.get("429").is_none(), "{ready}");
        assert!(
            ready["503"]["headers"].get("Retry-After").is_some(),
            "{ready}"
        );
        app.shutdown().await;
    }
}

mod slow_reads {
    use super::*;

    /// A request longer than `--request-timeout` is answered 503
    /// problem+json with `Retry-After`.
    #[sqlx::test(migrator = "marketplace::MIGRATOR")]
    async fn a_request_past_the_request_timeout_is_answered_503(pool: PgPool) {
        let app = spawn_app_with(
            pool.clone(),
            BusKind::InMemory,
            &["--request-timeout", "1s", "--read-statement-timeout", "0"],
        )
        .await;
        let Seeded { book, .. } = app.seed_offer(10.0, 1).await;
        let lock = lock_offers(&pool).await;
        let problem = assert_unavailable(app.get(&format!("/offers/{book}")).await).await;
        assert_eq!(problem["type"], "/problems/timeout", "{problem}");
        lock.rollback().await.unwrap();
        app.shutdown().await;
    }

    /// A read held past `--read-statement-timeout` is cancelled by
    /// PostgreSQL and answered 503; the driver's words reach the log, with
    /// the request id the client saw, and never the client.
    #[sqlx::test(migrator = "marketplace::MIGRATOR")]
    async fn a_read_past_the_statement_timeout_is_answered_503(pool: PgPool) {
        let app = spawn_app_with(
            pool.clone(),
            BusKind::InMemory,
            &["--read-statement-timeout", "1s", "--request-timeout", "60s"],
        )
        .await;
        let Seeded { book, .. } = app.seed_offer(10.0, 1).await;
        let lock = lock_offers(&pool).await;
        let response = app.get(&format!("/offers/{book}")).await;
        let request_id = header(&response, "x-request-id");
        let problem = assert_unavailable(response).await;
        lock.rollback().await.unwrap();

        assert_eq!(problem["type"], "/problems/unavailable", "{problem}");
        let detail = problem["detail"].as_str().unwrap();
        assert_eq!(detail, marketplace::http::error::DATABASE_UNAVAILABLE);
        assert!(!detail.contains("canceling statement"), "{detail}");
        let lines = logged("request not accepted", &[("request_id", &request_id)]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].fields["error"].contains("canceling statement"),
            "{lines:?}"
        );
        // The pool is whole again: the next read is answered.
        assert_eq!(
            app.get(&format!("/offers/{book}")).await.status(),
            StatusCode::OK
        );
        app.shutdown().await;
    }
}

mod request_ids {
    use super::*;

    /// Every answer carries `x-request-id`: the client's when it is a sane
    /// short token, else a fresh UUID.
    #[tokio::test]
    async fn every_answer_carries_a_request_id() {
        let app = spawn(TestDb::sqlite().await, BusKind::InMemory, &[]).await;
        for (path, status) in [
            ("/health/live", 200),
            ("/books", 200),
            (&*format!("/books/{}", Uuid::new_v4()), 404),
            ("/books/not-an-id", 400),
            ("/books?pageSize=1000", 422),
            ("/no/such/route", 404),
        ] {
            let response = app.get(path).await;
            assert_eq!(response.status().as_u16(), status, "{path}");
            let id = header(&response, "x-request-id");
            assert!(Uuid::parse_str(&id).is_ok(), "{path}: {id}");
        }
        let send = |id: &str| {
            app.client
                .get(format!("{}/books", app.address))
                .header("x-request-id", id)
                .send()
        };
        let kept = send("0b7e4c2a-trace:42").await.unwrap();
        assert_eq!(header(&kept, "x-request-id"), "0b7e4c2a-trace:42");
        for insane in ["two words", &"x".repeat(65), "<script>"] {
            let replaced = send(insane).await.unwrap();
            let id = header(&replaced, "x-request-id");
            assert!(Uuid::parse_str(&id).is_ok(), "{insane:?} replaced: {id}");
        }
        app.shutdown().await;
    }
}

mod paging {
    use super::*;

    /// A book with five offers, two of them at the same price; their ids
    /// cheapest first (ties by id).
    async fn book_with_five_offers(app: &TestApp) -> (Uuid, Vec<String>) {
        let Seeded { user, book, offer } = app.seed_offer(1.0, 1).await;
        let mut offers = vec![(100, offer)];
        for price in [3.0, 2.0, 2.0, 5.0] {
            let id = Uuid::new_v4();
            assert_eq!(app.post_offer(id, book, user, price, 1).await.status(), 200);
            offers.push(((price * 100.0) as i64, id));
        }
        offers.sort();
        app.eventually(|| async {
            let listed = app.get_json(&format!("/offers/{book}")).await;
            (listed.as_array()?.len() == 5).then_some(())
        })
        .await;
        (
            book,
            offers.into_iter().map(|(_, id)| id.to_string()).collect(),
        )
    }

    fn ids(page: &Value) -> Vec<String> {
        page.as_array()
            .expect("an array")
            .iter()
            .map(|offer| offer["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// The next page's path from `Link: <...>; rel="next"`, if any.
    fn next(response: &Response) -> Option<String> {
        let link = response.headers().get("link")?.to_str().ok()?;
        let (target, relation) = link.split_once(';')?;
        assert_eq!(relation.trim(), "rel=\"next\"", "{link}");
        Some(
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned(),
        )
    }

    async fn pages_follow_the_link_and_stay_bounded(app: &TestApp) {
        let (book, expected) = book_with_five_offers(app).await;

        // Without a limit: the whole list (under the default page), no Link.
        let response = app.get(&format!("/offers/{book}")).await;
        assert!(next(&response).is_none());
        assert_eq!(ids(&response.json().await.unwrap()), expected);

        // Pages of two: two, two, one; the last one announces no next page.
        let mut path = format!("/offers/{book}?limit=2");
        let mut pages = Vec::new();
        loop {
            let response = app.get(&path).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let link = next(&response);
            pages.push(ids(&response.json().await.unwrap()));
            match link {
                Some(link) => path = link,
                None => break,
            }
        }
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        assert_eq!(pages.concat(), expected);

        // A page holding exactly what is left has no next page.
        let response = app.get(&format!("/offers/{book}?limit=5")).await;
        assert!(next(&response).is_none());
        assert_eq!(ids(&response.json().await.unwrap()).len(), 5);

        // Bounded: past the largest page, 422; malformed, 400.
        for (query, status) in [
            ("limit=1001", 422),
            ("limit=0", 422),
            ("limit=many", 400),
            ("after=x", 400),
        ] {
            let response = app.get(&format!("/offers/{book}?{query}")).await;
            assert_problem(response, status).await;
        }
        assert_eq!(
            app.get(&format!("/offers/{book}?limit=1000"))
                .await
                .status(),
            200
        );
        // After an offer of another book: nothing.
        let page = app
            .get_json(&format!("/offers/{book}?after={}", Uuid::new_v4()))
            .await;
        assert_eq!(page, serde_json::json!([]));
    }

    #[sqlx::test(migrator = "marketplace::MIGRATOR")]
    async fn on_postgres(pool: PgPool) {
        let app = spawn_app_with(pool, BusKind::InMemory, &[]).await;
        pages_follow_the_link_and_stay_bounded(&app).await;
        app.shutdown().await;
    }

    #[tokio::test]
    async fn on_sqlite() {
        let app = spawn(TestDb::sqlite().await, BusKind::InMemory, &[]).await;
        pages_follow_the_link_and_stay_bounded(&app).await;
        app.shutdown().await;
    }
}
