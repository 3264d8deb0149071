//! The marketplace on PostgreSQL: a connection pool, row locks for
//! concurrent writers in any number of processes, and the schema in
//! `migrations/postgres/`.

mod books;
mod offers;
mod orders;
pub mod schema;
mod users;

pub use books::{
    BOOKS_AFTER_SQL, FIRST_BOOKS_SQL, LIST_BOOKS_SQL, SEARCH_BOOKS_AFTER_SQL, SEARCH_BOOKS_SQL,
};
pub use offers::LIST_OFFERS_SQL;

use std::time::Duration;

use anyhow::Context;
use sqlx::{migrate::MigrateDatabase, postgres::PgPoolOptions, Connection, PgPool, Postgres};

/// A pooled connection idle at least this long is pinged before use.
const PING_AFTER_IDLE: Duration = Duration::from_secs(5);

/// Migrations of the PostgreSQL schema (`migrations/postgres/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// The repositories on a PostgreSQL pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Repositories on `pool` (migrated).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// Connects to `url` (creating the database if needed) with at most
/// `max_connections`, and applies the migrations.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    create_if_missing(url).await?;
    let pool = open(url, max_connections).await?;
    MIGRATOR
        .run(&pool)
        .await
        .context("cannot apply migrations")?;
    Ok(pool)
}

/// Connects to `url` with at most `max_connections`, neither creating the
/// database nor changing its schema, and waits up to `schema_wait` until
/// every migration of this release is applied (by `marketplace migrate`,
/// run as the schema's owner): what a role without DDL rights can do.
pub async fn connect_without_migrating(
    url: &str,
    max_connections: u32,
    schema_wait: Duration,
) -> anyhow::Result<PgPool> {
    let pool = open(url, max_connections).await?;
    let status = schema::wait_until_current(&pool, schema_wait)
        .await
        .context("the database schema is not this release's")?;
    if !status.unknown.is_empty() {
        tracing::warn!(
            unknown = ?status.unknown,
            "the database holds migrations this release does not know (a newer release applied them)"
        );
    }
    tracing::info!("schema up to date; migrations left to `marketplace migrate`");
    Ok(pool)
}

async fn create_if_missing(url: &str) -> anyhow::Result<()> {
    if !Postgres::database_exists(url)
        .await
        .context("cannot reach PostgreSQL")?
    {
        // Processes started together (an API and its workers) race to
        // create it: losing that race is fine, the database is there.
        if let Err(error) = Postgres::create_database(url).await {
            if !Postgres::database_exists(url).await.unwrap_or(false) {
                return Err(anyhow::Error::new(error).context("cannot create the database"));
            }
        }
    }
    Ok(())
}

async fn open(url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    pool_options(max_connections)
        .connect(url)
        .await
        .context("cannot connect to PostgreSQL")
}

/// A pool of at most `max_connections`.
fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // By default every acquire pings the connection first: one more
        // round trip to PostgreSQL for each query, which made a read cost
        // two. A connection is now pinged only after it sat idle, which is
        // when the server or the network may have dropped it; a busy pool
        // hands its connections straight out.
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_AFTER_IDLE {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
}

/// A second pool on `pool`'s database, of as many connections, whose every
/// statement PostgreSQL cancels after `statement_timeout` (SQLSTATE 57014,
/// which the API answers 503): the reads' pool, so a slow or blocked read
/// gives its connection back, while writes keep a pool without that bound.
/// The timeout is a startup parameter of each connection: no extra round
/// trip per query. Connections are opened on first use.
pub fn reads_pool(pool: &PgPool, statement_timeout: Duration) -> PgPool {
    let millis = statement_timeout.as_millis().max(1).to_string();
    let options = pool
        .connect_options()
        .as_ref()
        .clone()
        .options([("statement_timeout", millis.as_str())]);
    pool_options(pool.options().get_max_connections()).connect_lazy_with(options)
}

/// A pool on the read replica `url`, of at most `max_connections`, whose
/// every statement PostgreSQL cancels after `statement_timeout` (none for
/// zero), like the primary's [`reads_pool`]. Never creates nor migrates
/// anything (a replica is read-only: it follows the primary's schema);
/// connections are opened on first use.
pub fn replica_pool(
    url: &str,
    max_connections: u32,
    statement_timeout: Duration,
) -> anyhow::Result<PgPool> {
    let mut options: sqlx::postgres::PgConnectOptions =
        url.parse().context("invalid --read-database-url")?;
    if !statement_timeout.is_zero() {
        let millis = statement_timeout.as_millis().max(1).to_string();
        options = options.options([("statement_timeout", millis.as_str())]);
    }
    Ok(pool_options(max_connections).connect_lazy_with(options))
}
