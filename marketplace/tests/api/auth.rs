//! Who may do what, with authentication on: every write and order read
//! needs a valid bearer token and acts only for its user; the catalogue
//! stays public. Tokens are HS256 with a random secret per test (as
//! `marketplace token` mints them), ES256 from a PEM key file, or ES256
//! from an issuer's JWKS served by the test, keys rotating.
//!
//! Open mode (no key configured) is what every other test file runs: the
//! original contract, unchanged.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::{
    encoding::AsDer,
    signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING},
};
use jsonwebtoken::{encode, jwk::Jwk, Algorithm, EncodingKey, Header};
use marketplace::{config::BusKind, store::Database};
use reqwest::{Method, Response};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::{
    helpers::{assert_problem, header, spawn, TestApp, TestDb},
    on_every_bus,
};

const ISSUER: &str = "marketplace";
const AUDIENCE: &str = "marketplace";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// Claims of a token for `user`, valid for an hour, for this API.
fn claims(user: Uuid) -> Value {
    json!({ "sub": user, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 3600 })
}

/// Mints tokens with the test's random HS256 secret (and others).
pub struct Tokens {
    pub secret: String,
}

impl Tokens {
    pub(crate) fn random() -> Self {
        Self {
            secret: format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple()),
        }
    }

    fn sign(secret: &str, claims: &Value) -> String {
        let key = EncodingKey::from_secret(secret.as_bytes()).expect("a key");
        encode(&Header::new(Algorithm::HS256), claims, &key).expect("signed")
    }

    /// A valid token for `user`.
    pub(crate) fn of(&self, user: Uuid) -> String {
        Self::sign(&self.secret, &claims(user))
    }

    /// Tokens for `user` the API must refuse: signed with another secret,
    /// expired (past the leeway), for another audience, for another issuer,
    /// not yet valid, and whose subject is not a user id.
    fn refused(&self, user: Uuid) -> Vec<(&'static str, String)> {
        let mut expired = claims(user);
        expired["iat"] = json!(now() - 7200);
        expired["exp"] = json!(now() - 3600);
        let mut audience = claims(user);
        audience["aud"] = json!("billing");
        let mut issuer = claims(user);
        issuer["iss"] = json!("someone-else");
        let mut early = claims(user);
        early["nbf"] = json!(now() + 3600);
        let mut subject = claims(user);
        subject["sub"] = json!("ann@example.com");
        vec![
            (
                "bad signature",
                Self::sign(&Tokens::random().secret, &claims(user)),
            ),
            ("expired", Self::sign(&self.secret, &expired)),
            ("wrong audience", Self::sign(&self.secret, &audience)),
            ("wrong issuer", Self::sign(&self.secret, &issuer)),
            ("not yet valid", Self::sign(&self.secret, &early)),
            ("subject not a user id", Self::sign(&self.secret, &subject)),
            ("not a JWT", "not-a-jwt".to_owned()),
        ]
    }
}

/// `method path` with `body`, as the user of `token` (none: anonymous).
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Response {
    let mut request = app.client.request(method, format!("{}{path}", app.address));
    if let Some(body) = body {
        request = request.json(body);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request sent")
}

/// Asserts a `401` problem with its `WWW-Authenticate` challenge.
async fn assert_unauthorized(response: Response, invalid_token: bool) -> Value {
    let challenge = header(&response, "www-authenticate");
    let expected = if invalid_token {
        r#"Bearer realm="marketplace", error="invalid_token""#
    } else {
        r#"Bearer realm="marketplace""#
    };
    assert_eq!(challenge, expected);
    let body = assert_problem(response, 401).await;
    assert_eq!(body["type"], "/problems/unauthorized");
    body
}

/// The body of each write acting as `user`.
fn writes_of(user: Uuid) -> Vec<(Method, &'static str, Value)> {
    vec![
        (Method::PUT, "/user", json!({ "id": user, "name": "Ann" })),
        (
            Method::PUT,
            "/book",
            json!({ "id": Uuid::new_v4(), "title": "Dune", "author": "Frank Herbert" }),
        ),
        (
            Method::POST,
            "/offer",
            json!({ "id": Uuid::new_v4(), "bookId": Uuid::new_v4(), "sellerId": user, "price": 9.99, "stock": 3 }),
        ),
        (
            Method::POST,
            "/order",
            json!({ "id": Uuid::new_v4(), "userId": user, "items": [{ "offerId": Uuid::new_v4(), "quantity": 1 }] }),
        ),
    ]
}

/// Waits until `path` answers `200`.
async fn readable(app: &TestApp, path: &str) {
    app.eventually(|| async { (app.get(path).await.status() == 200).then_some(()) })
        .await;
}

/// Runs each scenario with authentication on (a random HS256 secret), once
/// per bus and store ([`tests_on_every_bus!`](crate::tests_on_every_bus)),
/// as `on_every_bus!`.
macro_rules! signed_in_on_every_bus {
    ($(async fn $name:ident($app:ident, $tokens:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn scenario($app: &TestApp, $tokens: &Tokens) $body

            async fn run(db: TestDb, bus: BusKind) {
                let tokens = Tokens::random();
                let app = spawn(db, bus, &["--auth-secret", &tokens.secret]).await;
                scenario(&app, &tokens).await;
                app.shutdown().await;
            }

            $crate::tests_on_every_bus!(run);
        }
    )*};
}

signed_in_on_every_bus! {
    async fn writes_and_order_reads_without_a_valid_token_are_401(app, tokens) {
        let ann = Uuid::new_v4();
        let order = format!("/orders/{}", Uuid::new_v4());
        let mut requests = writes_of(ann);
        requests.push((Method::GET, order.as_str(), Value::Null));
        for (method, path, body) in &requests {
            let body = (!body.is_null()).then_some(body);
            let response = send(app, method.clone(), path, body, None).await;
            let problem = assert_unauthorized(response, false).await;
            assert!(problem["detail"].as_str().unwrap().contains("Bearer"), "{problem}");
            for (why, token) in tokens.refused(ann) {
                let response = send(app, method.clone(), path, body, Some(&token)).await;
                let problem = assert_unauthorized(response, true).await;
                assert_eq!(
                    problem["detail"], "the bearer token is invalid, expired, or not issued for this API",
                    "{method} {path} with a token {why}: the verifier's reason stays in the log"
                );
            }
        }
        assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 0, "nothing was applied");
        assert_eq!(app.count("SELECT COUNT(*) FROM books").await, 0, "nothing was applied");
    }

    async fn a_signed_in_user_acts_only_as_itself(app, tokens) {
        let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let as_ann = tokens.of(ann);
        for (method, path, body) in writes_of(bob) {
            if path == "/book" {
                continue; // any signed-in user registers a book
            }
            let response = send(app, method.clone(), path, Some(&body), Some(&as_ann)).await;
            let problem = assert_problem(response, 403).await;
            assert_eq!(problem["type"], "/problems/forbidden", "{method} {path}");
        }
        let response = send(app, Method::PUT, "/user", Some(&json!({ "id": ann, "name": "Ann" })), Some(&as_ann)).await;
        assert_eq!(response.status(), 200);
        readable(app, &format!("/users/{ann}")).await;
        assert_eq!(app.count("SELECT COUNT(*) FROM users").await, 1, "only Ann's own save applied");
    }

    async fn the_owner_sells_buys_and_reads_its_order_that_nobody_else_sees(app, tokens) {
        let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let (as_ann, as_bob) = (tokens.of(ann), tokens.of(bob));
        let (book, offer, order) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        for (user, token, name) in [(ann, &as_ann, "Ann"), (bob, &as_bob, "Bob")] {
            let response = send(app, Method::PUT, "/user", Some(&json!({ "id": user, "name": name })), Some(token)).await;
            assert_eq!(response.status(), 200);
        }
        let response = send(app, Method::PUT, "/book", Some(&json!({ "id": book, "title": "Dune", "author": "Frank Herbert" })), Some(&as_ann)).await;
        assert_eq!(response.status(), 200);
        for path in [format!("/users/{ann}"), format!("/users/{bob}"), format!("/books/{book}")] {
            readable(app, &path).await;
        }
        let response = send(app, Method::POST, "/offer", Some(&json!({ "id": offer, "bookId": book, "sellerId": ann, "price": 9.99, "stock": 3 })), Some(&as_ann)).await;
        assert_eq!(response.status(), 200);
        app.eventually(|| async {
            (app.get_json(&format!("/books/{book}")).await["offerId"] == json!(offer)).then_some(())
        })
        .await;
        let response = send(app, Method::POST, "/order", Some(&json!({ "id": order, "userId": bob, "items": [{ "offerId": offer, "quantity": 2 }] })), Some(&as_bob)).await;
        assert_eq!(response.status(), 200);

        let path = format!("/orders/{order}");
        let confirmed = app
            .eventually(|| async {
                let response = send(app, Method::GET, &path, None, Some(&as_bob)).await;
                if response.status() != 200 {
                    return None;
                }
                let order: Value = response.json().await.ok()?;
                (order["status"] == "confirmed").then_some(order)
            })
            .await;
        assert_eq!(confirmed["userId"], json!(bob));

        // To the seller, as to anyone but the buyer, the order does not exist.
        let hidden = send(app, Method::GET, &path, None, Some(&as_ann)).await;
        let hidden = assert_problem(hidden, 404).await;
        let missing = Uuid::new_v4();
        let absent = send(app, Method::GET, &format!("/orders/{missing}"), None, Some(&as_ann)).await;
        let absent = assert_problem(absent, 404).await;
        assert_eq!(
            hidden,
            json!({ "type": absent["type"], "title": absent["title"], "status": 404, "detail": format!("order {order} not found") })
        );
        assert_eq!(absent["detail"], format!("order {missing} not found"));
    }

    async fn a_book_is_edited_only_by_the_user_who_registered_it(app, tokens) {
        let (ann, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let (as_ann, as_bob) = (tokens.of(ann), tokens.of(bob));
        let book = Uuid::new_v4();
        // The owner comes from the token: a body naming another one is ignored.
        let body = json!({ "id": book, "title": "Dune", "author": "Frank Herbert", "requestedBy": bob });
        assert_eq!(send(app, Method::PUT, "/book", Some(&body), Some(&as_ann)).await.status(), 200);
        readable(app, &format!("/books/{book}")).await;

        let edit = json!({ "id": book, "title": "Not Dune", "author": "Frank Herbert" });
        let refused = send(app, Method::PUT, "/book", Some(&edit), Some(&as_bob)).await;
        let problem = assert_problem(refused, 403).await;
        assert!(problem["detail"].as_str().unwrap().starts_with("not-the-owner"), "{problem}");

        let edit = json!({ "id": book, "title": "Dune Messiah", "author": "Frank Herbert" });
        assert_eq!(send(app, Method::PUT, "/book", Some(&edit), Some(&as_ann)).await.status(), 200);
        app.eventually(|| async {
            (app.get_json(&format!("/books/{book}")).await["title"] == "Dune Messiah").then_some(())
        })
        .await;
        assert_eq!(app.dead_letter_count().await, 0, "the refused edit was never dispatched");
    }

    async fn the_catalogue_stays_public_and_readiness_says_auth_is_on(app, tokens) {
        let ann = Uuid::new_v4();
        let as_ann = tokens.of(ann);
        let book = Uuid::new_v4();
        send(app, Method::PUT, "/user", Some(&json!({ "id": ann, "name": "Ann" })), Some(&as_ann)).await;
        send(app, Method::PUT, "/book", Some(&json!({ "id": book, "title": "Dune", "author": "Frank Herbert" })), Some(&as_ann)).await;
        for path in [format!("/users/{ann}"), format!("/books/{book}")] {
            readable(app, &path).await;
        }
        for path in [
            "/books".to_owned(),
            format!("/books/{book}"),
            format!("/offers/{book}"),
            format!("/users/{ann}"),
            "/health/live".to_owned(),
            "/openapi.json".to_owned(),
        ] {
            assert_eq!(send(app, Method::GET, &path, None, None).await.status(), 200, "GET {path}");
        }
        // A token sent is a token checked, on every route.
        let (_, expired) = tokens.refused(ann).swap_remove(1);
        assert_unauthorized(send(app, Method::GET, "/books", None, Some(&expired)).await, true).await;
        assert_eq!(
            app.get_json("/health/ready").await,
            json!({ "status": "ready", "auth": "on" })
        );
        // The contract says so too, and the owner is not a field clients send.
        let doc = app.get_json("/openapi.json").await;
        assert_eq!(
            doc["components"]["securitySchemes"]["bearerAuth"]["bearerFormat"],
            "JWT"
        );
        assert!(doc["paths"]["/order"]["post"]["responses"]["401"].is_object());
        assert!(doc["paths"]["/book"]["put"]["responses"]["403"].is_object());
        assert_eq!(doc["components"]["schemas"]["SaveBook"]["properties"]["requestedBy"], Value::Null);
    }
}

on_every_bus! {
    async fn open_mode_serves_writes_without_a_token_and_says_so(app) {
        let ann = Uuid::new_v4();
        // Any token is ignored, even a malformed one: nothing is checked.
        let response = send(app, Method::PUT, "/user", Some(&json!({ "id": ann, "name": "Ann" })), Some("not-a-jwt")).await;
        assert_eq!(response.status(), 200);
        assert_eq!(app.put_user(Uuid::new_v4(), "Bob").await.status(), 200);
        readable(app, &format!("/users/{ann}")).await;
        let ready = app.get_json("/health/ready").await;
        assert_eq!(ready["auth"], "off");
    }
}

/// An ES256 key pair made for the test.
struct EcKey {
    pair: EcdsaKeyPair,
    encoding: EncodingKey,
}

impl EcKey {
    fn generate() -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("a P-256 key");
        let pkcs8 = pair.to_pkcs8v1().expect("PKCS#8");
        let encoding = EncodingKey::from_ec_der(pkcs8.as_ref());
        Self { pair, encoding }
    }

    /// The public key as a JWK with key id `kid`.
    fn jwk(&self, kid: &str) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.encoding, Algorithm::ES256).expect("a JWK");
        jwk.common.key_id = Some(kid.to_owned());
        jwk
    }

    /// The public key in PEM (`PUBLIC KEY`, X.509 SubjectPublicKeyInfo).
    fn public_pem(&self) -> String {
        let der = self.pair.public_key().as_der().expect("DER");
        pem::encode(&pem::Pem::new("PUBLIC KEY", der.as_ref().to_vec()))
    }

    /// A token for `user` signed with this key, naming `kid`.
    fn token(&self, user: Uuid, kid: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        encode(&header, &claims(user), &self.encoding).expect("signed")
    }
}

/// An issuer's JWKS endpoint: serves the keys it is given, counts fetches.
struct Issuer {
    keys: Arc<Mutex<Vec<Jwk>>>,
    fetches: Arc<AtomicUsize>,
    url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Issuer {
    async fn start(keys: Vec<Jwk>) -> Self {
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (keys.clone(), fetches.clone());
        let router = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                let set = json!({ "keys": *served.lock().expect("keys") });
                async move { axum::Json(set) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bound");
        let address: SocketAddr = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("JWKS server");
        });
        Self {
            keys,
            fetches,
            url: format!("http://{address}/jwks"),
            server,
        }
    }

    fn publish(&self, jwk: Jwk) {
        self.keys.lock().expect("keys").push(jwk);
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A route that needs a signed-in user and writes nothing: `404` once the
/// token is accepted, `401` while it is not.
async fn probe(app: &TestApp, token: &str) -> u16 {
    let path = format!("/orders/{}", Uuid::new_v4());
    send(app, Method::GET, &path, None, Some(token))
        .await
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_rotated_jwks_key_is_fetched_and_an_unpublished_one_refused() {
    let (a, b, c) = (EcKey::generate(), EcKey::generate(), EcKey::generate());
    let issuer = Issuer::start(vec![a.jwk("a")]).await;
    let app = spawn(
        TestDb::sqlite().await,
        BusKind::InMemory,
        &[
            "--auth-jwks-url",
            &issuer.url,
            "--auth-jwks-min-refetch",
            "0s",
        ],
    )
    .await;
    let user = Uuid::new_v4();

    assert_eq!(
        probe(&app, &a.token(user, Some("a"))).await,
        404,
        "kid a accepted"
    );
    let fetched = issuer.fetches();

    issuer.publish(b.jwk("b"));
    assert_eq!(
        probe(&app, &b.token(user, Some("b"))).await,
        404,
        "kid b accepted after a refetch"
    );
    assert_eq!(
        issuer.fetches(),
        fetched + 1,
        "one fetch for the new key id"
    );
    assert_eq!(
        probe(&app, &a.token(user, Some("a"))).await,
        404,
        "kid a still accepted"
    );

    let refused = send(
        &app,
        Method::GET,
        "/books",
        None,
        Some(&c.token(user, Some("c"))),
    )
    .await;
    assert_unauthorized(refused, true).await;
    // A token naming a published kid but signed by another key.
    assert_eq!(probe(&app, &c.token(user, Some("a"))).await, 401);
    app.shutdown().await;
}

#[tokio::test]
async fn tokens_naming_unknown_keys_do_not_make_the_api_hammer_the_issuer() {
    let a = EcKey::generate();
    let issuer = Issuer::start(vec![a.jwk("a")]).await;
    // The default least interval between fetches (30 s).
    let app = spawn(
        TestDb::sqlite().await,
        BusKind::InMemory,
        &["--auth-jwks-url", &issuer.url],
    )
    .await;
    let fetched = issuer.fetches();
    assert_eq!(fetched, 1, "fetched once at start");
    let user = Uuid::new_v4();
    for attempt in 0..20 {
        let token = a.token(user, Some(&format!("made-up-{attempt}")));
        assert_eq!(probe(&app, &token).await, 401);
    }
    assert_eq!(issuer.fetches(), fetched, "no fetch within the interval");
    assert_eq!(
        probe(&app, &a.token(user, Some("a"))).await,
        404,
        "the known key still works"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_pem_public_key_verifies_es256_tokens_and_nothing_else() {
    let (key, other) = (EcKey::generate(), EcKey::generate());
    let path = std::env::temp_dir().join(format!(
        "marketplace-test-key-{}.pem",
        Uuid::new_v4().simple()
    ));
    std::fs::write(&path, key.public_pem()).expect("key file written");
    let app = spawn(
        TestDb::sqlite().await,
        BusKind::InMemory,
        &["--auth-key-file", path.to_str().expect("a UTF-8 path")],
    )
    .await;
    let user = Uuid::new_v4();

    assert_eq!(
        probe(&app, &key.token(user, None)).await,
        404,
        "signed by the key"
    );
    assert_eq!(
        probe(&app, &other.token(user, None)).await,
        401,
        "signed by another key"
    );
    // The public key used as an HMAC secret (algorithm confusion).
    let confused = Tokens::sign(&key.public_pem(), &claims(user));
    assert_eq!(
        probe(&app, &confused).await,
        401,
        "HS256 with the public key as secret"
    );
    app.shutdown().await;
    let _ = std::fs::remove_file(path);
}

/// Two users register the same new id at the same moment, many times over:
/// each time exactly one of them owns the book, and the other's save is
/// refused and changes nothing (PostgreSQL, where saves run concurrently).
#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn racing_registrations_of_a_new_book_leave_it_to_one_owner(pool: sqlx::PgPool) {
    use marketplace::model::{BookRegistration, BookSaveOutcome, Revision};

    let books = Database::Postgres(pool).repositories().books;
    for _ in 0..20 {
        let (id, ann, bob) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let save = |user: Uuid, title: &'static str| {
            let books = books.clone();
            tokio::spawn(async move {
                let revision = Revision {
                    accepted_at: chrono::Utc::now(),
                    envelope_id: Uuid::new_v4(),
                };
                books
                    .save_book(id, title, "Frank Herbert", Some(user), &revision, None)
                    .await
                    .expect("saved or refused")
            })
        };
        let (by_ann, by_bob) = (save(ann, "Ann's"), save(bob, "Bob's"));
        let outcomes = [by_ann.await.expect("task"), by_bob.await.expect("task")];
        let applied: Vec<usize> = (0..2)
            .filter(|i| outcomes[*i] == BookSaveOutcome::Applied)
            .collect();
        assert_eq!(applied.len(), 1, "{outcomes:?}");
        let (owner, title) = if applied[0] == 0 {
            (ann, "Ann's")
        } else {
            (bob, "Bob's")
        };
        assert_eq!(
            books.book_registration(id).await.expect("read"),
            Some(BookRegistration {
                registered_by: Some(owner)
            })
        );
        assert_eq!(
            books
                .get_book(id)
                .await
                .expect("read")
                .expect("saved")
                .title,
            title
        );
    }
}

#[tokio::test]
async fn readiness_probes_and_reads_never_need_a_token_even_with_a_jwks_down() {
    // An issuer that is not there: the API still starts, serves the
    // public catalogue, and answers 503 (not 401) to a token it cannot
    // check yet.
    let app = spawn(
        TestDb::sqlite().await,
        BusKind::InMemory,
        &[
            "--auth-jwks-url",
            "http://127.0.0.1:9/jwks",
            "--auth-jwks-timeout",
            "1s",
            "--auth-jwks-min-refetch",
            "0s",
        ],
    )
    .await;
    assert_eq!(app.get("/books").await.status(), 200);
    assert_eq!(app.get_json("/health/ready").await["auth"], "on");
    let token = EcKey::generate().token(Uuid::new_v4(), Some("a"));
    let response = send(&app, Method::GET, "/books", None, Some(&token)).await;
    assert_problem(response, 503).await;
    app.shutdown().await;
}

/// `marketplace token` as a developer runs it.
fn token_command(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_marketplace"))
        .arg("token")
        .args(args)
        .env_remove("MARKETPLACE_AUTH_SECRET")
        .env_remove("MARKETPLACE_AUTH_SECRET_FILE")
        .env_remove("MARKETPLACE_AUTH_ISSUER")
        .env_remove("MARKETPLACE_AUTH_AUDIENCE")
        .output()
        .expect("marketplace token runs")
}

#[tokio::test]
async fn the_token_subcommand_mints_a_token_the_api_accepts() {
    let tokens = Tokens::random();
    let user = Uuid::new_v4();
    let minted = token_command(&[
        "--user",
        &user.to_string(),
        "--ttl",
        "5m",
        "--auth-secret",
        &tokens.secret,
    ]);
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let token = String::from_utf8(minted.stdout).expect("UTF-8");
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT on stdout: {token}");

    let app = spawn(
        TestDb::sqlite().await,
        BusKind::InMemory,
        &["--auth-secret", &tokens.secret],
    )
    .await;
    let response = send(
        &app,
        Method::PUT,
        "/user",
        Some(&json!({ "id": user, "name": "Ann" })),
        Some(token),
    )
    .await;
    assert_eq!(response.status(), 200);
    readable(&app, &format!("/users/{user}")).await;
    app.shutdown().await;

    let refused = token_command(&["--user", &user.to_string()]);
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("no signing secret"), "{error}");
}
