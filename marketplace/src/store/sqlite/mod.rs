//! The marketplace on an embedded SQLite file: nothing to install, for a
//! laptop or a demo. One process only (the in-memory buses); the RabbitMQ
//! bus, with its several processes, needs PostgreSQL.
//!
//! SQLite has one writer at a time, so the store keeps one connection for
//! every write (transactions never wait on each other's locks, never fail
//! with `SQLITE_BUSY`) and a pool of readers for the GET routes, which the
//! write-ahead log lets run beside the writer. Prices are stored in cents
//! (SQLite has no exact decimal type); the schema is in
//! `migrations/sqlite/`.

mod books;
mod offers;
mod orders;
mod users;

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use rust_decimal::{prelude::ToPrimitive, Decimal};
use sqlx::{
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
    SqlitePool,
};

use super::StoreError;

/// Migrations of the SQLite schema (`migrations/sqlite/`).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// The repositories on an SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The one connection that writes.
    writer: SqlitePool,
    /// Connections that only read (the writer itself for `:memory:`).
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it if needed) and migrates the database at `url`
    /// (`sqlite://path/to/file.db`, or `sqlite::memory:` for a database
    /// that lives as long as the process), with up to `readers` reading
    /// connections.
    pub async fn open(url: &str, readers: u32) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .with_context(|| format!("invalid SQLite URL {url:?}"))?
            .create_if_missing(true)
            .foreign_keys(false)
            .busy_timeout(Duration::from_secs(5));
        let in_memory = options.get_filename().as_os_str() == ":memory:"
            || url.contains(":memory:")
            || url.contains("mode=memory");
        let writer_options = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30));
        let store = if in_memory {
            // One connection that never closes: an in-memory database lives
            // and dies with its connection.
            let writer = writer_options
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await
                .context("cannot open the SQLite database")?;
            Self {
                reader: writer.clone(),
                writer,
            }
        } else {
            // WAL: readers do not block the writer nor the writer them;
            // NORMAL sync is durable across a crash of the process (an
            // operating-system crash may lose the last commits).
            let options = options
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal);
            let writer = writer_options
                .connect_with(options.clone())
                .await
                .with_context(|| format!("cannot open the SQLite database {url}"))?;
            let reader = SqlitePoolOptions::new()
                .max_connections(readers.max(1))
                .acquire_timeout(Duration::from_secs(5))
                .connect_with(options)
                .await
                .with_context(|| format!("cannot open the SQLite database {url}"))?;
            Self { writer, reader }
        };
        MIGRATOR
            .run(&store.writer)
            .await
            .context("cannot apply the SQLite migrations")?;
        Ok(store)
    }

    /// The pool of the one writing connection.
    pub fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// The pool of reading connections.
    pub fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// A price or a total in cents, as stored (prices are rounded to cents
/// before they reach the store).
fn to_cents(price: Decimal) -> Result<i64, StoreError> {
    (price * Decimal::ONE_HUNDRED)
        .round()
        .to_i64()
        .ok_or_else(|| StoreError::Invalid(format!("price {price} out of range")))
}

/// A stored price in cents, as a decimal.
fn from_cents(cents: i64) -> Decimal {
    Decimal::new(cents, 2)
}

/// The `created_at` / `updated_at` format: RFC 3339 in UTC with
/// milliseconds, which sorts like the time it encodes.
const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// A `created_at` as stored ([`NOW`]'s format), e.g. to compare a list
/// position with the stored times.
fn stored_time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A stored `created_at` read back.
fn read_time(stored: &str) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    chrono::DateTime::parse_from_rfc3339(stored)
        .map(|at| at.with_timezone(&chrono::Utc))
        .map_err(|error| StoreError::Invalid(format!("created_at {stored:?}: {error}")))
}

/// A save's acceptance time as stored in `saved_at`: RFC 3339 in UTC with
/// exactly six decimals, so that text order is time order.
fn saved_at(revision: &crate::model::Revision) -> String {
    revision
        .accepted_at
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}
