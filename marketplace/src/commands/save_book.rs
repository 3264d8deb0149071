//! `PUT /book`: register a book in the catalogue or edit it.

use bus_core::{Command, CommandHandler, HandlerError, Message, MessageContext};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;
use validator::Validate;

/// Create the book `id`, or edit its title and author.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaveBook {
    /// Client-generated id.
    pub id: Uuid,
    /// Title, 1 to 255 characters.
    #[validate(length(min = 1, max = 255))]
    #[schema(min_length = 1, max_length = 255)]
    pub title: String,
    /// Author, 1 to 255 characters.
    #[validate(length(min = 1, max = 255))]
    #[schema(min_length = 1, max_length = 255)]
    pub author: String,
}

impl Message for SaveBook {
    const NAME: &'static str = "marketplace.SaveBook";
}
impl Command for SaveBook {}

/// Upserts the book; never touches its cheapest-offer columns, which belong
/// to the `refresh-cheapest-offer` subscriber.
#[derive(Debug, Clone)]
pub struct SaveBookHandler {
    pool: PgPool,
}

impl SaveBookHandler {
    /// A handler writing to `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl CommandHandler<SaveBook> for SaveBookHandler {
    async fn handle(&self, command: SaveBook, _: MessageContext) -> Result<(), HandlerError> {
        sqlx::query(
            "INSERT INTO books (id, title, author) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE
                SET title = EXCLUDED.title, author = EXCLUDED.author, updated_at = now()
             WHERE (books.title, books.author) IS DISTINCT FROM (EXCLUDED.title, EXCLUDED.author)",
        )
        .bind(command.id)
        .bind(&command.title)
        .bind(&command.author)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
