//! Users on PostgreSQL.

use async_trait::async_trait;
use bus_core::{durable::postgres::record_receipts, Receipt};
use sqlx::PgConnection;
use uuid::Uuid;

use super::PgStore;
use crate::{
    model::{Revision, User},
    store::{StoreError, UserRepository},
};

#[async_trait]
impl UserRepository for PgStore {
    async fn save_user(
        &self,
        user: &User,
        revision: &Revision,
        receipt: Option<Receipt>,
    ) -> Result<(), StoreError> {
        if receipt.is_none() {
            // Nothing to record with it: one statement.
            let mut conn = self.pool.acquire().await?;
            return save_user_on(&mut conn, user, revision).await;
        }
        let mut tx = self.pool.begin().await?;
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
        // In id order, so that two batches touching the same users lock
        // them in the same order (no deadlock); the revision check makes
        // the order of two saves of one user irrelevant.
        let mut ordered: Vec<_> = users.iter().collect();
        ordered.sort_by_key(|(user, _)| user.id);
        let mut tx = self.pool.begin().await?;
        for (user, revision) in ordered {
            save_user_on(&mut tx, user, revision).await?;
        }
        record_receipts(&mut tx, receipts.iter().copied()).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_user(&self, id: Uuid) -> Result<Option<User>, StoreError> {
        let user = sqlx::query_as("SELECT id, name FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(user)
    }
}

/// Upserts one user on `conn` (a transaction or a connection).
async fn save_user_on(
    conn: &mut PgConnection,
    user: &User,
    revision: &Revision,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO users (id, name, saved_at, saved_by) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE
            SET name = EXCLUDED.name, saved_at = EXCLUDED.saved_at, saved_by = EXCLUDED.saved_by,
                updated_at = CASE WHEN users.name IS DISTINCT FROM EXCLUDED.name
                                  THEN now() ELSE users.updated_at END
         WHERE (EXCLUDED.saved_at, EXCLUDED.saved_by) > (users.saved_at, users.saved_by)",
    )
    .bind(user.id)
    .bind(&user.name)
    .bind(revision.accepted_at)
    .bind(revision.envelope_id)
    .execute(conn)
    .await?;
    Ok(())
}
