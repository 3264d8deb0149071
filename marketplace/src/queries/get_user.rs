//! `GET /users/{id}`.

use bus_core::{Query, QueryError, QueryHandler};
use uuid::Uuid;

use super::Queries;
use crate::model::User;

/// The user `0`, if it exists.
#[derive(Debug, Clone, Copy)]
pub struct GetUser(pub Uuid);

impl Query for GetUser {
    type Output = Option<User>;
}

impl QueryHandler<GetUser> for Queries {
    async fn handle(&self, GetUser(id): GetUser) -> Result<Option<User>, QueryError> {
        Ok(self.reads.users.get_user(id).await?)
    }
}
