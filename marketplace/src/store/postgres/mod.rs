//! The marketplace on PostgreSQL: a connection pool, row locks for
//! concurrent writers in any number of processes, and the schema in
//! `migrations/postgres/`.

mod books;
mod offers;
mod orders;
mod users;

use std::time::Duration;

use anyhow::Context;
use sqlx::{migrate::MigrateDatabase, postgres::PgPoolOptions, PgPool, Postgres};

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
    if !Postgres::database_exists(url)
        .await
        .context("cannot reach PostgreSQL")?
    {
        Postgres::create_database(url)
            .await
            .context("cannot create the database")?;
    }
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .context("cannot connect to PostgreSQL")?;
    MIGRATOR
        .run(&pool)
        .await
        .context("cannot apply migrations")?;
    Ok(pool)
}
