//! Users on SQLite.

use async_trait::async_trait;
use bus_core::{durable::sqlite::record_receipts, Receipt};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{saved_at, SqliteStore, NOW};
use crate::{
    model::{Revision, User},
    store::{StoreError, UserRepository},
};

#[async_trait]
impl UserRepository for SqliteStore {
    async fn save_user(
        &self,
        user: &User,
        revision: &Revision,
        receipt: Option<Receipt>,
    ) -> Result<(), StoreError> {
        if receipt.is_none() {
            // Nothing to record with it: one statement.
            let mut conn = self.writer.acquire().await?;
            return save_user_on(&mut conn, user, revision).await;
        }
        let mut tx = self.writer.begin().await?;
        save_user_on(&mut tx, user, revision).await?;
        record_receipts(&mut tx, receipt).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn save_users(
        &self,
        users: &[(User, Revision)],
        receipts: &[Receipt],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for (user, revision) in users {
            save_user_on(&mut tx, user, revision).await?;
        }
        record_receipts(&mut tx, receipts.iter().copied()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let user = sqlx::query_as("SELECT id, name FROM users WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        Ok(user)
    }
}

/// Upserts one user on `conn` (a transaction or the writer).
async fn save_user_on(
    conn: &mut SqliteConnection,
    user: &User,
    revision: &Revision,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
            "INSERT INTO users (id, name, saved_at, saved_by) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO UPDATE
                SET name = excluded.name, saved_at = excluded.saved_at, saved_by = excluded.saved_by,
                    updated_at = CASE WHEN users.name IS NOT excluded.name
                                      THEN {NOW} ELSE users.updated_at END
             WHERE (excluded.saved_at, excluded.saved_by) > (users.saved_at, users.saved_by)"
        ))
        .bind(user.id)
        .bind(&user.name)
        .bind(saved_at(revision))
        .bind(revision.envelope_id)
        .execute(conn)
        .await?;
    Ok(())
}
