//! `GET /users/{id}`.

use bus_core::{Query, QueryError, QueryHandler};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::PgQueries;

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

impl QueryHandler<GetUser> for PgQueries {
    async fn handle(&self, GetUser(id): GetUser) -> Result<Option<User>, QueryError> {
        let user = sqlx::query_as("SELECT id, name FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(user)
    }
}
