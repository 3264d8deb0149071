//! Users on PostgreSQL.

use async_trait::async_trait;
use uuid::Uuid;

use super::PgStore;
use crate::{
    model::User,
    store::{StoreError, UserRepository},
};

#[async_trait]
impl UserRepository for PgStore {
    async fn save_user(&self, user: &User) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (id, name) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()
             WHERE users.name IS DISTINCT FROM EXCLUDED.name",
        )
        .bind(user.id)
        .bind(&user.name)
        .execute(&self.pool)
        .await?;
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
