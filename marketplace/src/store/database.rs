//! The database the marketplace runs on: which one, connected and migrated.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bus_core::outbox::OutboxStore;
use sqlx::{PgPool, SqlitePool};

use super::{postgres, repositories::Repositories, sqlite::SqliteStore};

/// One connection pool of a [`Database`], named for the metrics.
#[derive(Debug, Clone)]
pub enum NamedPool {
    /// A PostgreSQL pool.
    Postgres(&'static str, PgPool),
    /// An SQLite pool.
    Sqlite(&'static str, SqlitePool),
}

impl NamedPool {
    /// `main`, or SQLite's `writer` and `reader`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Postgres(name, _) | Self::Sqlite(name, _) => name,
        }
    }

    /// Connections open (idle or in use), and idle.
    pub fn connections(&self) -> (u32, usize) {
        match self {
            Self::Postgres(_, pool) => (pool.size(), pool.num_idle()),
            Self::Sqlite(_, pool) => (pool.size(), pool.num_idle()),
        }
    }

    /// The most connections the pool opens.
    pub fn max_connections(&self) -> u32 {
        match self {
            Self::Postgres(_, pool) => pool.options().get_max_connections(),
            Self::Sqlite(_, pool) => pool.options().get_max_connections(),
        }
    }

    /// How long a connection takes to get right now: when the pool is
    /// saturated (every connection it may open is open and in use), one is
    /// acquired, timed and given back at once, waiting at most `limit`;
    /// otherwise zero, since an idle connection is at hand or the pool
    /// opens one (the time to connect is not counted). `None` when the
    /// acquire failed for another reason than waiting (the database away).
    pub async fn connection_wait(&self, limit: Duration) -> Option<Duration> {
        let (size, idle) = self.connections();
        if idle > 0 || size < self.max_connections() {
            return Some(Duration::ZERO);
        }
        let started = Instant::now();
        let acquired = async {
            match self {
                Self::Postgres(_, pool) => pool.acquire().await.map(drop),
                Self::Sqlite(_, pool) => pool.acquire().await.map(drop),
            }
        };
        match tokio::time::timeout(limit, acquired).await {
            Ok(Ok(()) | Err(sqlx::Error::PoolTimedOut)) | Err(_) => Some(started.elapsed()),
            Ok(Err(_)) => None,
        }
    }
}

/// The database the marketplace runs on, connected and migrated.
#[derive(Debug, Clone)]
pub enum Database {
    /// PostgreSQL.
    Postgres(PgPool),
    /// An embedded SQLite file.
    Sqlite(SqliteStore),
}

/// The outbox rows waiting for the relay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutboxBacklog {
    /// How many.
    pub rows: i64,
    /// Age of the oldest, in seconds (zero when there is none).
    pub oldest_age_seconds: f64,
}

/// How long a readiness probe waits for the database.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the RabbitMQ bus refuses SQLite.
pub const RABBITMQ_NEEDS_POSTGRES: &str = "the RabbitMQ bus needs PostgreSQL: \
API and workers are separate processes sharing one database, and SQLite is a file for one process; \
set DATABASE_URL=postgres://... (or use --bus in-memory-async)";

impl Database {
    /// Connects to `url` and applies the migrations: `postgres://` or
    /// `postgresql://` for PostgreSQL (the database is created if missing),
    /// `sqlite:` for an SQLite file (created if missing). At most
    /// `max_connections` connections (readers, on SQLite).
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(
                postgres::connect(url, max_connections).await?,
            ))
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(SqliteStore::open(url, max_connections).await?))
        } else {
            anyhow::bail!(
                "DATABASE_URL must start with postgres://, postgresql:// or sqlite: (got {:?})",
                redact(url)
            )
        }
    }

    /// Connects to the PostgreSQL database `url` without creating it or
    /// changing its schema, once every migration of this release is applied
    /// (waiting up to `schema_wait` for `marketplace migrate`). SQLite is
    /// refused: its one process owns the file and migrates it.
    pub async fn connect_without_migrating(
        url: &str,
        max_connections: u32,
        schema_wait: Duration,
    ) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(
                postgres::connect_without_migrating(url, max_connections, schema_wait).await?,
            ))
        } else {
            anyhow::bail!(
                "--skip-migrations (MARKETPLACE_SKIP_MIGRATIONS) needs PostgreSQL; \
                 an SQLite file is migrated by the one process that opens it (got {:?})",
                redact(url)
            )
        }
    }

    /// The PostgreSQL pool, or the error that explains why the RabbitMQ bus
    /// cannot run on this database.
    pub fn require_postgres(&self) -> anyhow::Result<&PgPool> {
        self.postgres()
            .ok_or_else(|| anyhow::anyhow!(RABBITMQ_NEEDS_POSTGRES))
    }

    /// A database for the API's reads (GET routes) alone, if they need
    /// one: on PostgreSQL a pool of its own whose statements are cancelled
    /// after `statement_timeout` (`None` for zero: reads share this pool,
    /// unbounded). SQLite has no statement timeout (`None`): its reads are
    /// bounded by the request timeout alone.
    pub fn for_reads(&self, statement_timeout: Duration) -> Option<Self> {
        match self {
            Self::Postgres(pool) if !statement_timeout.is_zero() => Some(Self::Postgres(
                postgres::reads_pool(pool, statement_timeout),
            )),
            _ => None,
        }
    }

    /// The PostgreSQL read replica `url`, for the reads a replication lag
    /// may delay (see `crate::queries::Queries`): at most `max_connections`,
    /// statements cancelled after `statement_timeout` (none for zero), as
    /// on the primary's reads. Never created nor migrated; connected on
    /// first use.
    pub fn replica(
        url: &str,
        max_connections: u32,
        statement_timeout: Duration,
    ) -> anyhow::Result<Self> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            anyhow::bail!(
                "--read-database-url (MARKETPLACE_READ_DATABASE_URL) must start with \
                 postgres:// or postgresql:// (got {:?})",
                redact(url)
            );
        }
        Ok(Self::Postgres(postgres::replica_pool(
            url,
            max_connections,
            statement_timeout,
        )?))
    }

    /// Every repository on this database.
    pub fn repositories(&self) -> Repositories {
        match self {
            Self::Postgres(pool) => {
                let store = postgres::PgStore::new(pool.clone());
                Repositories {
                    users: Arc::new(store.clone()),
                    books: Arc::new(store.clone()),
                    offers: Arc::new(store.clone()),
                    orders: Arc::new(store),
                }
            }
            Self::Sqlite(store) => Repositories {
                users: Arc::new(store.clone()),
                books: Arc::new(store.clone()),
                offers: Arc::new(store.clone()),
                orders: Arc::new(store.clone()),
            },
        }
    }

    /// The outbox the command handlers stage their events in.
    pub fn outbox(&self) -> Box<dyn OutboxStore> {
        match self {
            Self::Postgres(pool) => Box::new(pool.clone()),
            Self::Sqlite(store) => Box::new(store.writer().clone()),
        }
    }

    /// The PostgreSQL pool, if this is PostgreSQL.
    pub fn postgres(&self) -> Option<&PgPool> {
        match self {
            Self::Postgres(pool) => Some(pool),
            Self::Sqlite(_) => None,
        }
    }

    /// The connection pools behind this database, by name (`main`; SQLite:
    /// `writer`, `reader`), for the metrics.
    pub fn pools(&self) -> Vec<NamedPool> {
        match self {
            Self::Postgres(pool) => vec![NamedPool::Postgres("main", pool.clone())],
            Self::Sqlite(store) => vec![
                NamedPool::Sqlite("writer", store.writer().clone()),
                NamedPool::Sqlite("reader", store.reader().clone()),
            ],
        }
    }

    /// The outbox rows not yet relayed, and the age of the oldest one
    /// (zero when there is none).
    pub async fn outbox_backlog(&self) -> Result<OutboxBacklog, sqlx::Error> {
        let (rows, oldest_age_seconds) = match self {
            Self::Postgres(pool) => {
                sqlx::query_as::<_, (i64, f64)>(
                    "SELECT count(*)::bigint, \
                     COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 \
                     FROM bus_outbox",
                )
                .fetch_one(pool)
                .await?
            }
            Self::Sqlite(store) => {
                sqlx::query_as::<_, (i64, f64)>(
                    "SELECT count(*), \
                     COALESCE((julianday('now') - julianday(min(created_at))) * 86400.0, 0.0) \
                     FROM bus_outbox",
                )
                .fetch_one(store.reader())
                .await?
            }
        };
        Ok(OutboxBacklog {
            rows,
            oldest_age_seconds: oldest_age_seconds.max(0.0),
        })
    }

    /// Checks that the database answers, for `/health/ready`.
    pub async fn ping(&self) -> Result<(), String> {
        let query = async {
            match self {
                Self::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
                Self::Sqlite(store) => sqlx::query("SELECT 1")
                    .execute(store.reader())
                    .await
                    .map(drop),
            }
        };
        match tokio::time::timeout(PING_TIMEOUT, query).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!("database: {error}")),
            Err(_) => Err("database: no answer in time".to_owned()),
        }
    }

    /// `"PostgreSQL"` or `"SQLite"`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "PostgreSQL",
            Self::Sqlite(_) => "SQLite",
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match self {
            Self::Postgres(pool) => pool.close().await,
            Self::Sqlite(store) => store.close().await,
        }
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
