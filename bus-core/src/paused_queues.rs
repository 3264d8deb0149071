//! The `bus_paused_queues` table (features `postgres`, `sqlite`): which
//! consumers an operator paused, kept in the database so that a restarted
//! worker does not consume them and every worker sharing the database
//! converges on the same set.

use chrono::{DateTime, Utc};

/// Why an operation on the paused-queue table failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PausedQueuesError {
    /// The database refused or could not be reached; nothing was changed.
    #[error("paused-queue table: {0}")]
    Database(#[from] sqlx::Error),
}

/// One paused queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PausedQueue {
    /// The queue's name, as the transport's topology declares it.
    pub queue: String,
    /// When it was paused.
    pub paused_at: DateTime<Utc>,
    /// Who paused it (free text: an operator, a process).
    pub paused_by: Option<String>,
}

/// The `bus_paused_queues` table of a database: the queues whose consumers
/// are paused.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum PausedQueues {
    /// On PostgreSQL.
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    /// On SQLite.
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
}

impl PausedQueues {
    /// Every paused queue, in name order.
    pub async fn list(&self) -> Result<Vec<PausedQueue>, PausedQueuesError> {
        match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(pool) => {
                let rows: Vec<(String, DateTime<Utc>, Option<String>)> = sqlx::query_as(
                    "SELECT queue, paused_at, paused_by FROM bus_paused_queues ORDER BY queue",
                )
                .fetch_all(pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(queue, paused_at, paused_by)| PausedQueue {
                        queue,
                        paused_at,
                        paused_by,
                    })
                    .collect())
            }
            #[cfg(feature = "sqlite")]
            Self::Sqlite(pool) => {
                let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
                    "SELECT queue, paused_at, paused_by FROM bus_paused_queues ORDER BY queue",
                )
                .fetch_all(pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(queue, paused_at, paused_by)| PausedQueue {
                        queue,
                        // Written by `pause` as RFC 3339; anything else reads
                        // as the epoch rather than hiding the row.
                        paused_at: DateTime::parse_from_rfc3339(&paused_at)
                            .map(|at| at.with_timezone(&Utc))
                            .unwrap_or_default(),
                        paused_by,
                    })
                    .collect())
            }
        }
    }

    /// Records `queue` as paused by `paused_by`. Returns `false` if it was
    /// paused already (the first record is kept).
    pub async fn pause(&self, queue: &str, paused_by: &str) -> Result<bool, PausedQueuesError> {
        let now = Utc::now();
        let inserted = match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(pool) => sqlx::query(
                "INSERT INTO bus_paused_queues (queue, paused_at, paused_by) VALUES ($1, $2, $3)
                 ON CONFLICT (queue) DO NOTHING",
            )
            .bind(queue)
            .bind(now)
            .bind(paused_by)
            .execute(pool)
            .await?
            .rows_affected(),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(pool) => sqlx::query(
                "INSERT INTO bus_paused_queues (queue, paused_at, paused_by) VALUES (?, ?, ?)
                 ON CONFLICT (queue) DO NOTHING",
            )
            .bind(queue)
            .bind(now.to_rfc3339())
            .bind(paused_by)
            .execute(pool)
            .await?
            .rows_affected(),
        };
        Ok(inserted > 0)
    }

    /// Records `queue` as running. Returns `false` if it was not paused.
    pub async fn resume(&self, queue: &str) -> Result<bool, PausedQueuesError> {
        let deleted = match self {
            #[cfg(feature = "postgres")]
            Self::Postgres(pool) => sqlx::query("DELETE FROM bus_paused_queues WHERE queue = $1")
                .bind(queue)
                .execute(pool)
                .await?
                .rows_affected(),
            #[cfg(feature = "sqlite")]
            Self::Sqlite(pool) => sqlx::query("DELETE FROM bus_paused_queues WHERE queue = ?")
                .bind(queue)
                .execute(pool)
                .await?
                .rows_affected(),
        };
        Ok(deleted > 0)
    }
}
