//! `GET /books/{id}`.

use bus_core::{Query, QueryError, QueryHandler};
use uuid::Uuid;

use super::Queries;
use crate::model::Book;

/// The book `0`, if it exists.
#[derive(Debug, Clone, Copy)]
pub struct GetBook(pub Uuid);

impl Query for GetBook {
    type Output = Option<Book>;
}

impl QueryHandler<GetBook> for Queries {
    async fn handle(&self, GetBook(id): GetBook) -> Result<Option<Book>, QueryError> {
        Ok(self.reads.books.get_book(id).await?)
    }
}
