//! `PUT /user`: create a user or rename it.

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
    model::{trimmed, User},
    store::UserRepository,
};

/// Create the user `id`, or rename it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SaveUser {
    /// Client-generated id.
    pub id: Uuid,
    /// Display name, 1 to 50 characters once trimmed, with no control
    /// character or bidirectional override.
    #[serde(deserialize_with = "trimmed")]
    #[validate(length(min = 1, max = 50), custom(function = "plain_text"))]
    // The pattern says what the validation accepts: 1 to 50 characters once
    // trimmed of whitespace, none of them a control character or a
    // bidirectional override (maxLength would count the whitespace).
    #[schema(
        pattern = r"^[\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u202F\u205F\u2066-\u2069\u3000](?:[^\u0000-\u001F\u007F-\u009F\u202A-\u202E\u2066-\u2069]{0,48}[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028-\u202F\u205F\u2066-\u2069\u3000])?[\u0009-\u000D\u0020\u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub name: String,
}

impl Message for SaveUser {
    const NAME: &'static str = "marketplace.SaveUser";
}
impl Command for SaveUser {}

/// Upserts the user: applying it twice leaves the same row, and a save
/// accepted before the one the row holds changes nothing (last write wins
/// by the order the API accepted them).
#[derive(Clone)]
pub struct SaveUserHandler {
    users: Arc<dyn UserRepository>,
}

impl SaveUserHandler {
    /// A handler writing to `users`.
    pub fn new(users: Arc<dyn UserRepository>) -> Self {
        Self { users }
    }
}

impl CommandHandler<SaveUser> for SaveUserHandler {
    async fn handle(&self, command: SaveUser, context: MessageContext) -> Result<(), HandlerError> {
        let user = User {
            id: command.id,
            name: command.name,
        };
        self.users
            .save_user(&user, &revision(&context), context.durable_receipt())
            .await?;
        Ok(())
    }
}

/// A batch of saves in one transaction, in the order they arrived, with
/// the durable bus's receipts of the batch.
impl BatchHandler<SaveUser> for SaveUserHandler {
    async fn handle_batch(&self, batch: &[(SaveUser, MessageContext)]) -> BatchOutcome {
        let users: Vec<_> = batch
            .iter()
            .map(|(command, context)| {
                let user = User {
                    id: command.id,
                    name: command.name.clone(),
                };
                (user, revision(context))
            })
            .collect();
        let receipts: Vec<_> = batch
            .iter()
            .filter_map(|(_, context)| context.durable_receipt())
            .collect();
        self.users.save_users(&users, &receipts).await?;
        Ok(batch.iter().map(|_| Ok(())).collect())
    }
}
