//! `GET /books?after=`: a cursor page of the catalogue, or of a search of
//! it.

use bus_core::{Query, QueryError, QueryHandler};

use super::Queries;
use crate::model::{Book, BookKey, SearchTerms};

/// Up to `page_size` books after the book of key `after` (from the first
/// without it), in registration order, or, with `search`, of the books
/// matching it, best match first (ties by id).
#[derive(Debug, Clone)]
pub struct ListBooksAfter {
    /// The key of the last book of the previous page.
    pub after: Option<BookKey>,
    /// Books per page.
    pub page_size: u32,
    /// The words to look for, if any.
    pub search: Option<SearchTerms>,
}

/// A cursor page of books.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedBooksPage {
    /// The page's books, in the list's order.
    pub books: Vec<Book>,
    /// The key of the page's last book when books follow it.
    pub next: Option<BookKey>,
}

impl Query for ListBooksAfter {
    type Output = KeyedBooksPage;
}

impl QueryHandler<ListBooksAfter> for Queries {
    /// One row more than the page tells whether another page follows.
    async fn handle(&self, query: ListBooksAfter) -> Result<KeyedBooksPage, QueryError> {
        let mut rows = self
            .reads
            .books
            .list_books_after(
                query.after.as_ref(),
                query.page_size.saturating_add(1),
                query.search.as_ref(),
            )
            .await?;
        let more = rows.len() > query.page_size as usize;
        rows.truncate(query.page_size as usize);
        let next = if more {
            rows.last().map(|(_, key)| *key)
        } else {
            None
        };
        Ok(KeyedBooksPage {
            books: rows.into_iter().map(|(book, _)| book).collect(),
            next,
        })
    }
}
