//! `PUT /book`: register a book in the catalogue or edit it.

use bus_core::{
    BatchHandler, BatchOutcome, Command, CommandHandler, HandlerError, Message, MessageContext,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use utoipa::ToSchema;
use uuid::Uuid;
use validator::Validate;

use crate::{
    commands::{plain_text, revision},
    model::{trimmed, BookSaveOutcome, NotTheOwner},
    store::{BookRepository, BookSave},
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
    /// The signed-in user who sent the save: set by the API from the
    /// verified token, whatever the body says; absent in open mode and in
    /// messages accepted before authentication was turned on. With it, the
    /// handler registers a new book to this user and refuses to edit a book
    /// someone else registered ([`crate::model::may_save_book`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub requested_by: Option<Uuid>,
}

impl Message for SaveBook {
    const NAME: &'static str = "marketplace.SaveBook";
}
impl Command for SaveBook {}

/// Upserts the book unless it holds a save accepted later (last write wins
/// by the order the API accepted them); never touches its cheapest-offer
/// columns, which belong
/// to the `refresh-cheapest-offer` subscriber. A save by a user who does
/// not own the book is refused for good (`not-the-owner`) and never applied.
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
        let outcome = self
            .books
            .save_book(
                command.id,
                &command.title,
                &command.author,
                command.requested_by,
                &revision(&context),
                context.durable_receipt(),
            )
            .await?;
        match outcome {
            BookSaveOutcome::Applied => Ok(()),
            BookSaveOutcome::Refused(refusal) => Err(not_the_owner(refusal, command.requested_by)),
        }
    }
}

/// A batch of saves in one transaction, in the order they arrived; a save
/// refused to its sender is dead-lettered alone, the others are applied
/// with their durable bus's receipts.
impl BatchHandler<SaveBook> for SaveBookHandler {
    async fn handle_batch(&self, batch: &[(SaveBook, MessageContext)]) -> BatchOutcome {
        let saves: Vec<BookSave> = batch
            .iter()
            .map(|(command, context)| BookSave {
                id: command.id,
                title: command.title.clone(),
                author: command.author.clone(),
                editor: command.requested_by,
                revision: revision(context),
                receipt: context.durable_receipt(),
            })
            .collect();
        let outcomes = self.books.save_books(&saves).await?;
        Ok(outcomes
            .into_iter()
            .zip(batch)
            .map(|(outcome, (command, _))| match outcome {
                BookSaveOutcome::Applied => Ok(()),
                BookSaveOutcome::Refused(refusal) => {
                    Err(not_the_owner(refusal, command.requested_by))
                }
            })
            .collect())
    }
}

/// A save of a book its sender does not own: logged at `WARN`, and a
/// permanent failure whose reason starts with `not-the-owner`
/// (dead-lettered on asynchronous buses; `403` on the sync bus, which finds
/// the [`NotTheOwner`] in its source).
fn not_the_owner(refusal: NotTheOwner, sender: Option<Uuid>) -> HandlerError {
    tracing::warn!(
        book = %refusal.book,
        sender = ?sender,
        "book save by a user who does not own it: refused, the book is left as it was"
    );
    HandlerError::Permanent {
        message: refusal.to_string(),
        source: Some(Box::new(refusal)),
    }
}
