//! Dead letters kept in the database (features `postgres`, `sqlite`): one
//! `bus_dead_letters` row per message given up on, so they survive a restart
//! and tools can list and replay them.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::{DeadLetter, DeadLetterSink, RetryPolicy};

/// DDL of the dead-letter table on PostgreSQL, for your migrations.
#[cfg(feature = "postgres")]
pub const POSTGRES_SCHEMA: &str = "\
CREATE TABLE IF NOT EXISTS bus_dead_letters (
    id               UUID        PRIMARY KEY,
    message_id       UUID        NOT NULL,
    message_type     TEXT        NOT NULL,
    subscriber       TEXT,
    reason           TEXT        NOT NULL,
    attempts         INTEGER     NOT NULL,
    envelope         JSONB       NOT NULL,
    dead_lettered_at TIMESTAMPTZ NOT NULL
);";

/// DDL of the dead-letter table on SQLite, for your migrations.
#[cfg(feature = "sqlite")]
pub const SQLITE_SCHEMA: &str = "\
CREATE TABLE IF NOT EXISTS bus_dead_letters (
    id               TEXT    PRIMARY KEY,
    message_id       TEXT    NOT NULL,
    message_type     TEXT    NOT NULL,
    subscriber       TEXT,
    reason           TEXT    NOT NULL,
    attempts         INTEGER NOT NULL,
    envelope         TEXT    NOT NULL,
    dead_lettered_at TEXT    NOT NULL
);";

/// A [`DeadLetterSink`] writing to the `bus_dead_letters` table
/// ([`POSTGRES_SCHEMA`], [`SQLITE_SCHEMA`]).
///
/// `store` must not block a bus worker, so it hands the dead letter to a
/// writer task, which inserts it and, while the database refuses, tries
/// again with backoff (up to 30 s apart) until it is stored: a dead letter
/// is lost only if the process dies first (every one is also logged at
/// `ERROR` with its payload before it gets here). The writer ends once every
/// clone of the sink is dropped and what it holds is written.
#[derive(Debug, Clone)]
pub struct DatabaseDeadLetters {
    sender: mpsc::UnboundedSender<DeadLetter>,
}

impl DatabaseDeadLetters {
    /// Dead letters in `pool`'s `bus_dead_letters` table. Must be called
    /// within a tokio runtime (it starts the writer task).
    #[cfg(feature = "postgres")]
    pub fn postgres(pool: sqlx::PgPool) -> Self {
        Self::start(move |dead_letter| {
            let pool = pool.clone();
            async move {
                sqlx::query(
                    "INSERT INTO bus_dead_letters
                     (id, message_id, message_type, subscriber, reason, attempts, envelope, dead_lettered_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(uuid::Uuid::new_v4())
                .bind(dead_letter.envelope.id)
                .bind(&dead_letter.envelope.message_type)
                .bind(&dead_letter.subscriber)
                .bind(&dead_letter.error)
                .bind(i32::try_from(dead_letter.attempts).unwrap_or(i32::MAX))
                .bind(sqlx::types::Json(&dead_letter.envelope))
                .bind(dead_letter.dead_lettered_at)
                .execute(&pool)
                .await
                .map(drop)
            }
        })
    }

    /// Dead letters in `pool`'s `bus_dead_letters` table (SQLite). Must be
    /// called within a tokio runtime.
    #[cfg(feature = "sqlite")]
    pub fn sqlite(pool: sqlx::SqlitePool) -> Self {
        Self::start(move |dead_letter| {
            let pool = pool.clone();
            async move {
                let envelope = serde_json::to_string(&dead_letter.envelope)
                    .map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
                sqlx::query(
                    "INSERT INTO bus_dead_letters
                     (id, message_id, message_type, subscriber, reason, attempts, envelope, dead_lettered_at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(dead_letter.envelope.id.to_string())
                .bind(&dead_letter.envelope.message_type)
                .bind(&dead_letter.subscriber)
                .bind(&dead_letter.error)
                .bind(i64::from(dead_letter.attempts))
                .bind(envelope)
                .bind(dead_letter.dead_lettered_at.to_rfc3339())
                .execute(&pool)
                .await
                .map(drop)
            }
        })
    }

    fn start<F, Fut>(insert: F) -> Self
    where
        F: Fn(DeadLetter) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), sqlx::Error>> + Send,
    {
        let (sender, mut receiver) = mpsc::unbounded_channel::<DeadLetter>();
        let backoff = RetryPolicy {
            max_attempts: u32::MAX,
            initial_backoff: Duration::from_millis(100),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(30),
        };
        tokio::spawn(async move {
            while let Some(dead_letter) = receiver.recv().await {
                let mut failures = 0;
                while let Err(error) = insert(dead_letter.clone()).await {
                    failures += 1;
                    let retry_in = backoff.delay_after(failures);
                    tracing::warn!(
                        message_id = %dead_letter.envelope.id,
                        %error,
                        ?retry_in,
                        "cannot store a dead letter yet"
                    );
                    tokio::time::sleep(retry_in).await;
                }
            }
        });
        Self { sender }
    }
}

impl DeadLetterSink for DatabaseDeadLetters {
    fn store(&self, dead_letter: DeadLetter) {
        if let Err(mpsc::error::SendError(dead_letter)) = self.sender.send(dead_letter) {
            // Only when the runtime is gone: the ERROR line logged before
            // this call is all that is left of it.
            tracing::error!(message_id = %dead_letter.envelope.id, "dead-letter writer stopped; dead letter kept in the log only");
        }
    }
}
