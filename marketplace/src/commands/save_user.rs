//! `PUT /user`: create a user or rename it.

use bus_core::{Command, CommandHandler, HandlerError, Message, MessageContext};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;
use validator::Validate;

/// Create the user `id`, or rename it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaveUser {
    /// Client-generated id.
    pub id: Uuid,
    /// Display name, 1 to 50 characters.
    #[validate(length(min = 1, max = 50))]
    #[schema(min_length = 1, max_length = 50)]
    pub name: String,
}

impl Message for SaveUser {
    const NAME: &'static str = "marketplace.SaveUser";
}
impl Command for SaveUser {}

/// Upserts the user: applying it twice leaves the same row.
#[derive(Debug, Clone)]
pub struct SaveUserHandler {
    pool: PgPool,
}

impl SaveUserHandler {
    /// A handler writing to `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl CommandHandler<SaveUser> for SaveUserHandler {
    async fn handle(&self, command: SaveUser, _: MessageContext) -> Result<(), HandlerError> {
        sqlx::query(
            "INSERT INTO users (id, name) VALUES ($1, $2)
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()
             WHERE users.name IS DISTINCT FROM EXCLUDED.name",
        )
        .bind(command.id)
        .bind(&command.name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
