//! Who registered a book: `PUT /book` checks it before accepting an edit.

use bus_core::{Query, QueryError, QueryHandler};
use uuid::Uuid;

use super::Queries;
use crate::model::BookRegistration;

/// The registration of book `0`, if it exists.
#[derive(Debug, Clone, Copy)]
pub struct GetBookRegistration(pub Uuid);

impl Query for GetBookRegistration {
    type Output = Option<BookRegistration>;
}

impl QueryHandler<GetBookRegistration> for Queries {
    async fn handle(
        &self,
        GetBookRegistration(id): GetBookRegistration,
    ) -> Result<Option<BookRegistration>, QueryError> {
        Ok(self.primary.books.book_registration(id).await?)
    }
}
