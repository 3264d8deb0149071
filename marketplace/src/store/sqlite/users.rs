//! Users on SQLite.

use async_trait::async_trait;
use uuid::Uuid;

use super::{SqliteStore, NOW};
use crate::{
    model::User,
    store::{StoreError, UserRepository},
};

#[async_trait]
impl UserRepository for SqliteStore {
    async fn save_user(&self, user: &User) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO users (id, name) VALUES (?1, ?2)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, updated_at = {NOW}
             WHERE users.name IS NOT excluded.name"
        ))
        .bind(user.id)
        .bind(&user.name)
        .execute(&self.writer)
        .await?;
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
