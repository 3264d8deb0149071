//! The schema's version, read without changing anything: for processes that
//! connect as a role without DDL rights while `marketplace migrate`, as the
//! schema's owner, applies the migrations.

use std::{collections::HashMap, time::Duration};

use sqlx::PgPool;

use super::MIGRATOR;

/// How often the schema is read again while waiting for the migrations.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Why the schema is not the one this release runs on.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Migrations of this release are not applied (yet).
    #[error(
        "the database schema lacks {} migration(s) of this release (first missing: {first}); \
         run `marketplace migrate` with the schema owner's DATABASE_URL",
        missing.len()
    )]
    Behind {
        /// Versions not applied.
        missing: Vec<i64>,
        /// The first of them.
        first: i64,
    },
    /// A migration failed half-way: an operator must repair it.
    #[error("migration {0} failed part-way (marked unsuccessful in _sqlx_migrations); repair it, then run `marketplace migrate`")]
    Dirty(i64),
    /// A migration was applied with other content than this release's.
    #[error("migration {0} was applied with other content than this release's (checksum differs)")]
    Changed(i64),
    /// The schema could not be read.
    #[error("cannot read the schema version: {0}")]
    Database(#[from] sqlx::Error),
}

impl SchemaError {
    /// Whether waiting may help: migrations still to apply, or the
    /// database momentarily away.
    fn may_resolve(&self) -> bool {
        matches!(self, Self::Behind { .. } | Self::Database(_))
    }
}

/// What the schema holds, compared with this release's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaStatus {
    /// Migrations applied that this release does not know (a newer release
    /// applied them).
    pub unknown: Vec<i64>,
}

/// Checks once that every migration of this release is applied, unchanged
/// and successful. Reads `_sqlx_migrations` only.
pub async fn check(pool: &PgPool) -> Result<SchemaStatus, SchemaError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    let applied: Vec<(i64, bool, Vec<u8>)> = if exists {
        sqlx::query_as("SELECT version, success, checksum FROM _sqlx_migrations")
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    let mut applied: HashMap<i64, (bool, Vec<u8>)> = applied
        .into_iter()
        .map(|(version, success, checksum)| (version, (success, checksum)))
        .collect();
    if let Some(version) = applied
        .iter()
        .filter(|(_, (success, _))| !success)
        .map(|(version, _)| *version)
        .min()
    {
        return Err(SchemaError::Dirty(version));
    }
    let mut missing = Vec::new();
    for migration in MIGRATOR
        .iter()
        .filter(|migration| !migration.migration_type.is_down_migration())
    {
        match applied.remove(&migration.version) {
            Some((_, checksum)) if checksum.as_slice() != migration.checksum.as_ref() => {
                return Err(SchemaError::Changed(migration.version));
            }
            Some(_) => {}
            None => missing.push(migration.version),
        }
    }
    if let Some(&first) = missing.first() {
        return Err(SchemaError::Behind { missing, first });
    }
    let mut unknown: Vec<i64> = applied.into_keys().collect();
    unknown.sort_unstable();
    Ok(SchemaStatus { unknown })
}

/// [`check`], again every half second while migrations are missing or the
/// database does not answer, for at most `wait`; the last error after that.
pub async fn wait_until_current(
    pool: &PgPool,
    wait: Duration,
) -> Result<SchemaStatus, SchemaError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut announced = false;
    loop {
        match check(pool).await {
            Ok(status) => return Ok(status),
            Err(error) if error.may_resolve() && tokio::time::Instant::now() < deadline => {
                if !announced {
                    tracing::info!(%error, ?wait, "waiting for the schema to be migrated");
                    announced = true;
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            Err(error) => return Err(error),
        }
    }
}
