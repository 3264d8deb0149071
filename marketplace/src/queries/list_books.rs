//! `GET /books`: a page of the catalogue.

use bus_core::{Query, QueryError, QueryHandler};

use super::Queries;
use crate::model::Book;

/// Page `page` (from 1) of `page_size` books, in registration order.
#[derive(Debug, Clone, Copy)]
pub struct ListBooks {
    /// Page number, from 1.
    pub page: u32,
    /// Books per page.
    pub page_size: u32,
}

impl Query for ListBooks {
    type Output = Vec<Book>;
}

impl QueryHandler<ListBooks> for Queries {
    async fn handle(&self, query: ListBooks) -> Result<Vec<Book>, QueryError> {
        Ok(self
            .store
            .books
            .list_books(query.page, query.page_size)
            .await?)
    }
}
