//! `GET /books`: a page of the catalogue, or of a search of it.

use bus_core::{Query, QueryError, QueryHandler};

use super::Queries;
use crate::model::{Book, SearchTerms};

/// Page `page` (from 1) of `page_size` books, in registration order, or,
/// with `search`, of the books matching it, best match first (ties by id).
#[derive(Debug, Clone)]
pub struct ListBooks {
    /// Page number, from 1.
    pub page: u32,
    /// Books per page.
    pub page_size: u32,
    /// The words to look for, if any.
    pub search: Option<SearchTerms>,
}

/// A page of books.
#[derive(Debug, Clone, PartialEq)]
pub struct BooksPage {
    /// The page's books, in the list's order.
    pub books: Vec<Book>,
    /// Whether books follow this page.
    pub more: bool,
}

impl Query for ListBooks {
    type Output = BooksPage;
}

impl QueryHandler<ListBooks> for Queries {
    /// One row more than the page tells whether another page follows.
    async fn handle(&self, query: ListBooks) -> Result<BooksPage, QueryError> {
        let offset = u64::from(query.page.saturating_sub(1)) * u64::from(query.page_size);
        let mut books = self
            .reads
            .books
            .list_books(
                offset,
                query.page_size.saturating_add(1),
                query.search.as_ref(),
            )
            .await?;
        let more = books.len() > query.page_size as usize;
        books.truncate(query.page_size as usize);
        Ok(BooksPage { books, more })
    }
}
