//! `GET /users/{id}`.

use bus_core::{Query, QueryError, QueryHandler};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Queries;

/// A user.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// User id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
}

/// The user `0`, if it exists.
#[derive(Debug, Clone, Copy)]
pub struct GetUser(pub Uuid);

impl Query for GetUser {
    type Output = Option<User>;
}

impl QueryHandler<GetUser> for Queries {
    async fn handle(&self, GetUser(id): GetUser) -> Result<Option<User>, QueryError> {
        Ok(self.store.users.get_user(id).await?)
    }
}
