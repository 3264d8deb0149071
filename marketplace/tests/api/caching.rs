//! Conditional requests and caching: every `200` of a `GET` carries an
//! `ETag` and its route's `Cache-Control`; sending the `ETag` back in
//! `If-None-Match` answers `304` with no body until the answer changes.

use reqwest::{Method, Response, StatusCode};
use uuid::Uuid;

use crate::{
    helpers::{assert_problem, header, spawn, TestApp, TestDb},
    on_every_bus,
};

/// `method path` with `If-None-Match: if_none_match` (none when `None`).
async fn request(
    app: &TestApp,
    method: Method,
    path: &str,
    if_none_match: Option<&str>,
) -> Response {
    let mut request = app.client.request(method, format!("{}{path}", app.address));
    if let Some(tags) = if_none_match {
        request = request.header("if-none-match", tags);
    }
    request.send().await.expect("request sent")
}

/// `GET path` answered `200`: its `ETag`, which must be a quoted hex digest.
async fn etag_of(app: &TestApp, path: &str) -> String {
    let response = app.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    let etag = header(&response, "etag");
    let digest = etag
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or_else(|| panic!("a strong quoted ETag on GET {path}: {etag:?}"));
    assert!(
        digest.len() == 32 && digest.bytes().all(|b| b.is_ascii_hexdigit()),
        "a hex digest: {etag}"
    );
    etag
}

/// Asserts that `GET path` with `If-None-Match: tags` is a `304` with no
/// body that carries `etag`, `cache_control` and a request id.
async fn assert_not_modified(
    app: &TestApp,
    path: &str,
    tags: &str,
    etag: &str,
    cache_control: &str,
) {
    let response = request(app, Method::GET, path, Some(tags)).await;
    assert_eq!(
        response.status(),
        StatusCode::NOT_MODIFIED,
        "GET {path} with {tags}"
    );
    assert_eq!(header(&response, "etag"), etag);
    assert_eq!(header(&response, "cache-control"), cache_control);
    assert!(!header(&response, "x-request-id").is_empty());
    assert_eq!(
        response.text().await.expect("body"),
        "",
        "a 304 has no body"
    );
}

/// Asserts that `GET path` answers `200` with `cache_control` (and, when
/// `per_caller`, `Vary: Authorization`); returns its `ETag`.
async fn assert_cached_as(
    app: &TestApp,
    path: &str,
    cache_control: &str,
    per_caller: bool,
) -> String {
    let response = app.get(path).await;
    assert_eq!(response.status(), StatusCode::OK, "GET {path}");
    assert_eq!(
        header(&response, "cache-control"),
        cache_control,
        "GET {path}"
    );
    let vary: Vec<_> = response
        .headers()
        .get_all("vary")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect();
    assert_eq!(
        vary.iter()
            .any(|value| value.eq_ignore_ascii_case("authorization")),
        per_caller,
        "Vary of GET {path}: {vary:?}"
    );
    etag_of(app, path).await
}

/// Waits until `GET path` with `If-None-Match: old` is a `200` again (its
/// answer changed); returns the new `ETag`, which differs from `old`.
async fn await_changed(app: &TestApp, path: &str, old: &str) -> String {
    let etag = app
        .eventually(|| async {
            let response = request(app, Method::GET, path, Some(old)).await;
            match response.status() {
                StatusCode::NOT_MODIFIED => None,
                StatusCode::OK => Some(header(&response, "etag")),
                other => panic!("GET {path}: {other}"),
            }
        })
        .await;
    assert_ne!(etag, old, "GET {path}: a changed answer has a new ETag");
    etag
}

on_every_bus! {
    async fn the_current_etag_answers_304_without_a_body(app) {
        let seeded = app.seed_offer(12.5, 3).await;
        for path in [
            format!("/books/{}", seeded.book),
            format!("/offers/{}", seeded.book),
            format!("/users/{}", seeded.user),
            "/books".to_owned(),
        ] {
            let etag = etag_of(app, &path).await;
            let cache_control = header(&app.get(&path).await, "cache-control");
            // The same answer twice has the same tag.
            assert_eq!(etag_of(app, &path).await, etag, "GET {path} is stable");
            assert_not_modified(app, &path, &etag, &etag, &cache_control).await;
            // HEAD too, with the same tag.
            let head = request(app, Method::HEAD, &path, None).await;
            assert_eq!(head.status(), StatusCode::OK);
            assert_eq!(header(&head, "etag"), etag, "HEAD {path}");
            let head = request(app, Method::HEAD, &path, Some(&etag)).await;
            assert_eq!(head.status(), StatusCode::NOT_MODIFIED, "HEAD {path}");
        }
    }

    async fn lists_of_tags_weak_tags_and_a_star_match(app) {
        let seeded = app.seed_offer(12.5, 3).await;
        let path = format!("/books/{}", seeded.book);
        let etag = etag_of(app, &path).await;
        let cache_control = "public, max-age=5";
        for tags in [
            format!("\"0000\", {etag}"),
            format!("{etag},\"ffff\""),
            format!("W/{etag}"),
            format!("\"a,b\", W/{etag}"),
            "*".to_owned(),
        ] {
            assert_not_modified(app, &path, &tags, &etag, cache_control).await;
        }
        // Two header lines make one list.
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .header("if-none-match", "\"0000\"")
            .header("if-none-match", etag.as_str())
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        // Other, or malformed, tags are a full answer.
        let other = etag.replace('"', "");
        for tags in ["\"0000\"", other.as_str(), "", "W/", "\"unterminated"] {
            let response = request(app, Method::GET, &path, Some(tags)).await;
            assert_eq!(response.status(), StatusCode::OK, "If-None-Match: {tags}");
            assert_eq!(header(&response, "etag"), etag);
            let book: serde_json::Value = response.json().await.expect("the book");
            assert_eq!(book["id"], seeded.book.to_string());
        }
    }

    async fn a_change_gives_a_200_with_a_new_etag(app) {
        let seeded = app.seed_offer(12.5, 3).await;
        let book_path = format!("/books/{}", seeded.book);
        let offers_path = format!("/offers/{}", seeded.book);
        let user_path = format!("/users/{}", seeded.user);
        let book_etag = etag_of(app, &book_path).await;
        let offers_etag = etag_of(app, &offers_path).await;
        let user_etag = etag_of(app, &user_path).await;

        // A cheaper offer of the same book: the book's cheapest offer and
        // the book's offers change.
        let cheaper = Uuid::new_v4();
        assert_eq!(app.post_offer(cheaper, seeded.book, seeded.user, 9.99, 1).await.status(), 200);
        app.await_listed(seeded.book, cheaper).await;
        let new_book_etag = await_changed(app, &book_path, &book_etag).await;
        await_changed(app, &offers_path, &offers_etag).await;
        assert_not_modified(app, &book_path, &new_book_etag, &new_book_etag, "public, max-age=5").await;

        // The seller's own offers list the new one.
        let my_offers = format!("/users/{}/offers", seeded.user);
        let my_offers_etag = etag_of(app, &my_offers).await;
        let another = Uuid::new_v4();
        assert_eq!(app.post_offer(another, seeded.book, seeded.user, 20.0, 1).await.status(), 200);
        await_changed(app, &my_offers, &my_offers_etag).await;

        // A rename changes the profile.
        assert_eq!(app.put_user(seeded.user, "Renamed").await.status(), 200);
        let new_user_etag = await_changed(app, &user_path, &user_etag).await;
        assert_eq!(app.get_json(&user_path).await["name"], "Renamed");
        assert_not_modified(app, &user_path, &new_user_etag, &new_user_etag, "no-cache").await;
    }

    async fn each_route_has_its_cache_control(app) {
        let seeded = app.seed_offer(12.5, 3).await;
        let order = Uuid::new_v4();
        assert_eq!(app.post_order(order, seeded.user, &[(seeded.offer, 1)]).await.status(), 200);
        app.settled_order(order).await;
        let catalogue = "public, max-age=5";
        for path in [
            "/books".to_owned(),
            "/books?page=1&pageSize=10".to_owned(),
            format!("/books/{}", seeded.book),
            format!("/offers/{}", seeded.book),
            format!("/offers/{}?limit=1", seeded.book),
            "/books?q=dune".to_owned(),
            "/books?after=".to_owned(),
        ] {
            assert_cached_as(app, &path, catalogue, false).await;
        }
        assert_cached_as(app, &format!("/users/{}", seeded.user), "no-cache", false).await;
        for path in [
            format!("/orders/{order}"),
            format!("/users/{}/orders", seeded.user),
            format!("/users/{}/offers?limit=1", seeded.user),
        ] {
            let etag = assert_cached_as(app, &path, "private, no-cache", true).await;
            let response = request(app, Method::GET, &path, Some(&etag)).await;
            assert_eq!(response.status(), StatusCode::NOT_MODIFIED, "GET {path}");
            assert_eq!(header(&response, "vary"), "Authorization", "a 304 carries the 200's Vary");
        }
        for path in ["/health/live", "/health/ready", "/metrics"] {
            assert_cached_as(app, path, "no-store", false).await;
        }
        assert_cached_as(app, "/openapi.json", "public, max-age=300", false).await;
    }

    async fn error_answers_are_not_stored_and_have_no_etag(app) {
        for path in [
            format!("/books/{}", Uuid::new_v4()),
            format!("/users/{}", Uuid::new_v4()),
            format!("/orders/{}", Uuid::new_v4()),
            "/books/not-a-uuid".to_owned(),
            "/books?pageSize=0".to_owned(),
            "/no/such/route".to_owned(),
        ] {
            // Even when the precondition is `*`: a 404 stays a 404.
            let response = request(app, Method::GET, &path, Some("*")).await;
            let status = response.status();
            assert!(status.is_client_error(), "GET {path}: {status}");
            assert!(response.headers().get("etag").is_none(), "GET {path}: no ETag");
            assert_eq!(header(&response, "cache-control"), "no-store", "GET {path}");
            assert_problem(response, status.as_u16()).await;
        }
        // A write is answered as before: no validator.
        let response = app.put_user(Uuid::new_v4(), "Ann").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("etag").is_none());
        assert!(response.headers().get("cache-control").is_none());
    }
}

/// The OpenAPI document describes the validators of every `GET`: the
/// `If-None-Match` parameter, the `ETag` and `Cache-Control` of its `200`,
/// and its `304`.
#[tokio::test]
async fn the_openapi_document_describes_conditional_gets() {
    let app = spawn(
        TestDb::sqlite().await,
        marketplace::config::BusKind::InMemory,
        &[],
    )
    .await;
    let document = app.get_json("/openapi.json").await;
    let paths = document["paths"].as_object().expect("paths");
    let mut gets = 0;
    for (path, item) in paths {
        let Some(get) = item.get("get") else { continue };
        gets += 1;
        let parameters = get["parameters"].as_array().expect("parameters");
        assert!(
            parameters
                .iter()
                .any(|p| p["name"] == "If-None-Match" && p["in"] == "header"),
            "If-None-Match on GET {path}"
        );
        for status in ["200", "304"] {
            let headers = &get["responses"][status]["headers"];
            for name in ["ETag", "Cache-Control"] {
                assert!(
                    headers[name].is_object(),
                    "{name} on {status} of GET {path}"
                );
            }
        }
        let personal =
            path.starts_with("/orders/") || path.ends_with("/orders") || path.ends_with("/offers");
        assert_eq!(
            get["responses"]["200"]["headers"]["Vary"].is_object(),
            personal,
            "Vary on GET {path}"
        );
    }
    assert!(gets >= 9, "the GET routes are documented: {gets}");
    app.shutdown().await;
}
