//! The API itself killed with SIGKILL mid-load, on the durable bus: every
//! offer answered `200` is applied once the API is started again.
//!
//! On the default configuration (`marketplace serve` with no flag: the
//! durable bus on an SQLite file), and on PostgreSQL with two API
//! processes consuming the one queue table.

use std::{
    collections::HashSet,
    net::TcpListener,
    path::PathBuf,
    process::Stdio,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex as StdMutex,
    },
    time::Duration,
};

use serde_json::json;
use sqlx::{PgPool, SqlitePool};
use tokio::process::{Child, Command};
use uuid::Uuid;

/// Concurrent clients: a small API's load.
const CLIENTS: usize = 16;
/// Load before the kill.
const BEFORE_KILL: Duration = Duration::from_millis(2_500);
/// Load after the restart.
const AFTER_RESTART: Duration = Duration::from_millis(1_500);
/// How long the restarted API may take to apply what was accepted.
const PATIENCE: Duration = Duration::from_secs(120);

/// The database the API processes share.
pub enum CrashDb {
    /// An SQLite file of its own (the default configuration's database).
    Sqlite { path: PathBuf, pool: SqlitePool },
    /// A fresh PostgreSQL database from `#[sqlx::test]`.
    Postgres { pool: PgPool, url: String },
}

impl CrashDb {
    pub async fn sqlite() -> Self {
        let path =
            std::env::temp_dir().join(format!("marketplace-crash-{}.db", Uuid::new_v4().simple()));
        // Opened (and migrated) like the API opens it, then read from.
        let store =
            marketplace::store::SqliteStore::open(&format!("sqlite://{}", path.display()), 2)
                .await
                .expect("SQLite file");
        let pool = store.reader().clone();
        CrashDb::Sqlite { path, pool }
    }

    pub fn postgres(pool: PgPool) -> Self {
        let url = crate::harness::database_url(&pool);
        CrashDb::Postgres { pool, url }
    }

    fn url(&self) -> String {
        match self {
            CrashDb::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
            CrashDb::Postgres { url, .. } => url.clone(),
        }
    }

    async fn count(&self, sql: &str) -> i64 {
        match self {
            CrashDb::Sqlite { pool, .. } => sqlx::query_scalar(sql).fetch_one(pool).await,
            CrashDb::Postgres { pool, .. } => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }

    async fn offer_ids(&self) -> HashSet<Uuid> {
        let ids: Vec<Uuid> = match self {
            CrashDb::Sqlite { pool, .. } => {
                sqlx::query_scalar("SELECT id FROM offers")
                    .fetch_all(pool)
                    .await
            }
            CrashDb::Postgres { pool, .. } => {
                sqlx::query_scalar("SELECT id FROM offers")
                    .fetch_all(pool)
                    .await
            }
        }
        .expect("offer ids");
        ids.into_iter().collect()
    }

    async fn remove(self) {
        if let CrashDb::Sqlite { path, pool } = self {
            pool.close().await;
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
            }
        }
    }
}

/// One `marketplace serve` process on a port it keeps across restarts.
struct Api {
    child: Child,
    port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts `marketplace serve` with the default bus (no `--bus` flag) on
/// `database_url`, and waits until it is ready.
async fn start_api(database_url: &str, port: u16) -> Api {
    let mut command = Command::new(env!("CARGO_BIN_EXE_marketplace"));
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("MARKETPLACE_BUS")
        .env("DATABASE_URL", database_url)
        .env("MARKETPLACE_RETRY_INITIAL_BACKOFF", "50ms")
        .env("MARKETPLACE_RETRY_MAX_BACKOFF", "1s")
        .env("MARKETPLACE_RETRY_MAX_ATTEMPTS", "20")
        .env("MARKETPLACE_DB_MAX_CONNECTIONS", "8")
        .env("MARKETPLACE_RATE_LIMIT_PER_SECOND", "0")
        .env(
            "RUST_LOG",
            std::env::var("TEST_LOG").unwrap_or_else(|_| "error".into()),
        )
        .stdin(Stdio::null())
        .stdout(if std::env::var("TEST_LOG").is_ok() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true);
    let child = command.spawn().expect("marketplace binary starts");
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(response) = client
            .get(format!("http://127.0.0.1:{port}/health/ready"))
            .send()
            .await
        {
            if response.status() == 200 {
                return Api { child, port };
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the API on port {port} never became ready");
}

/// What the load saw.
#[derive(Debug, Default)]
pub struct CrashReport {
    pub accepted: Vec<Uuid>,
    /// Requests that got no answer (the API was down) or another status.
    pub unanswered: usize,
    pub applied: usize,
    pub dead_letters: i64,
    pub left_in_queue: i64,
}

/// Runs the scenario: `apis` API processes on `db`, offers from
/// `CLIENTS` clients spread over them, the first API killed with SIGKILL
/// after [`BEFORE_KILL`] and started again on its port, the load kept on
/// for [`AFTER_RESTART`], then waits until every offer answered `200` is
/// applied (or [`PATIENCE`] passes).
pub async fn kill_the_api_mid_load(db: CrashDb, apis: usize) -> CrashReport {
    let url = db.url();
    let mut processes = Vec::new();
    for _ in 0..apis {
        processes.push(start_api(&url, free_port()).await);
    }
    let ports: Vec<u16> = processes.iter().map(|api| api.port).collect();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let (seller, book) = (Uuid::new_v4(), Uuid::new_v4());
    let base = format!("http://127.0.0.1:{}", ports[0]);
    for (path, body) in [
        ("/user", json!({ "id": seller, "name": "Seller" })),
        (
            "/book",
            json!({ "id": book, "title": "Dune", "author": "Frank Herbert" }),
        ),
    ] {
        let response = client
            .put(format!("{base}{path}"))
            .json(&body)
            .send()
            .await
            .expect("seed request");
        assert_eq!(response.status(), 200, "PUT {path}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<StdMutex<Vec<(Uuid, u16)>>> = Arc::default();
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        let (stop, results, client) = (stop.clone(), results.clone(), client.clone());
        let address = format!("http://127.0.0.1:{}/offer", ports[n % ports.len()]);
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let id = Uuid::new_v4();
                let body = json!({ "id": id, "bookId": book, "sellerId": seller, "price": 12.5, "stock": 3 });
                let status = match client.post(&address).json(&body).send().await {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 0,
                };
                if status != 200 {
                    // The API is down or restarting: back off a little.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                results.lock().expect("results").push((id, status));
            }
        }));
    }

    tokio::time::sleep(BEFORE_KILL).await;
    let mut killed = processes.remove(0);
    killed.child.start_kill().expect("SIGKILL the API");
    let _ = killed.child.wait().await;
    let accepted_before_restart = results
        .lock()
        .expect("results")
        .iter()
        .filter(|(_, status)| *status == 200)
        .count();
    processes.insert(0, start_api(&url, killed.port).await);
    tokio::time::sleep(AFTER_RESTART).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("client task");
    }

    let results = std::mem::take(&mut *results.lock().expect("results"));
    let mut report = CrashReport::default();
    for (id, status) in results {
        match status {
            200 => report.accepted.push(id),
            _ => report.unanswered += 1,
        }
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let applied = db.offer_ids().await;
        report.applied = report
            .accepted
            .iter()
            .filter(|id| applied.contains(id))
            .count();
        if report.applied == report.accepted.len() || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The queue drains too: nothing is left to apply, nothing gave up on.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        report.left_in_queue = db.count("SELECT count(*) FROM bus_messages").await;
        if report.left_in_queue == 0 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    report.dead_letters = db.count("SELECT count(*) FROM bus_dead_letters").await;
    println!(
        "accepted {} ({accepted_before_restart} before the kill), applied {}, unanswered {}, \
         left in the queue {}, dead letters {}",
        report.accepted.len(),
        report.applied,
        report.unanswered,
        report.left_in_queue,
        report.dead_letters
    );
    for mut api in processes {
        let _ = api.child.start_kill();
        let _ = api.child.wait().await;
    }
    db.remove().await;
    report
}

impl CrashReport {
    /// Every offer answered `200` applied, once (offers are keyed by their
    /// id), nothing dead-lettered, nothing left waiting.
    pub fn assert_every_200_applied(&self) {
        assert!(
            self.accepted.len() >= 100,
            "the load ran: {} accepted",
            self.accepted.len()
        );
        assert_eq!(
            self.applied,
            self.accepted.len(),
            "lost: {} of {} offers answered 200 never applied",
            self.accepted.len() - self.applied,
            self.accepted.len()
        );
        assert_eq!(self.dead_letters, 0, "nothing dead-lettered");
        assert_eq!(self.left_in_queue, 0, "the queue drained");
    }
}
