//! `GET /books/{id}`.

use bus_core::{Query, QueryError, QueryHandler};
use uuid::Uuid;

use super::{Book, PgQueries};

/// The book `0`, if it exists.
#[derive(Debug, Clone, Copy)]
pub struct GetBook(pub Uuid);

impl Query for GetBook {
    type Output = Option<Book>;
}

impl QueryHandler<GetBook> for PgQueries {
    async fn handle(&self, GetBook(id): GetBook) -> Result<Option<Book>, QueryError> {
        let book = sqlx::query_as(
            "SELECT id, title, author, stock, price, offer_id FROM books WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(book)
    }
}
