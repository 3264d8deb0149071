//! `PUT /book`: register a book in the catalogue or edit it.

use bus_core::{Command, CommandHandler, HandlerError, Message, MessageContext};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use utoipa::ToSchema;
use uuid::Uuid;
use validator::Validate;

use crate::{
    commands::{plain_text, revision},
    model::trimmed,
    store::BookRepository,
};

/// Create the book `id`, or edit its title and author.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaveBook {
    /// Client-generated id.
    pub id: Uuid,
    /// Title, 1 to 255 characters once trimmed, with no control character
    /// or bidirectional override.
    #[serde(deserialize_with = "trimmed")]
    #[validate(length(min = 1, max = 255), custom(function = "plain_text"))]
    // The pattern says what the validation accepts: 1 to 255 characters once
    // trimmed of whitespace, none of them a control character or a
    // bidirectional override (maxLength would count the whitespace).
    #[schema(
        pattern = r"^[\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u202F\u205F\u2066-\u2069\u3000](?:[^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]{0,253}[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u202F\u205F\u2066-\u2069\u3000])?[\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub title: String,
    /// Author, 1 to 255 characters once trimmed, with no control character
    /// or bidirectional override.
    #[serde(deserialize_with = "trimmed")]
    #[validate(length(min = 1, max = 255), custom(function = "plain_text"))]
    // The pattern says what the validation accepts: 1 to 255 characters once
    // trimmed of whitespace, none of them a control character or a
    // bidirectional override (maxLength would count the whitespace).
    #[schema(
        pattern = r"^[\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u202F\u205F\u2066-\u2069\u3000](?:[^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]{0,253}[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u202F\u205F\u2066-\u2069\u3000])?[\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub author: String,
}

impl Message for SaveBook {
    const NAME: &'static str = "marketplace.SaveBook";
}
impl Command for SaveBook {}

/// Upserts the book unless it holds a save accepted later (last write wins
/// by the order the API accepted them); never touches its cheapest-offer
/// columns, which belong
/// to the `refresh-cheapest-offer` subscriber.
#[derive(Clone)]
pub struct SaveBookHandler {
    books: Arc<dyn BookRepository>,
}

impl SaveBookHandler {
    /// A handler writing to `books`.
    pub fn new(books: Arc<dyn BookRepository>) -> Self {
        Self { books }
    }
}

impl CommandHandler<SaveBook> for SaveBookHandler {
    async fn handle(&self, command: SaveBook, context: MessageContext) -> Result<(), HandlerError> {
        self.books
            .save_book(
                command.id,
                &command.title,
                &command.author,
                &revision(&context),
            )
            .await?;
        Ok(())
    }
}
