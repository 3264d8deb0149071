//! Books and their cheapest in-stock offer on PostgreSQL.

use async_trait::async_trait;
use uuid::Uuid;

use super::PgStore;
use crate::{
    model::{Book, Revision},
    store::{BookRepository, StoreError},
};

/// `GET /books`: `$1` books after skipping `$2`, in registration order.
///
/// The skipped rows are counted on the narrow `books_listing` index alone
/// (an index-only scan: no heap access per skipped row), and only the
/// page's own rows are read from the table. Same rows, in the same order,
/// as `ORDER BY created_at, id LIMIT $1 OFFSET $2`: `(created_at, id)` is
/// unique, and one statement sees one snapshot. A page past the end finds
/// no first key and is empty.
pub const LIST_BOOKS_SQL: &str = "SELECT id, title, author, stock, price, offer_id FROM books
     WHERE (created_at, id) >= (SELECT created_at, id FROM books
                                ORDER BY created_at, id OFFSET $2 LIMIT 1)
     ORDER BY created_at, id LIMIT $1";

#[async_trait]
impl BookRepository for PgStore {
    async fn save_book(
        &self,
        id: Uuid,
        title: &str,
        author: &str,
        revision: &Revision,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO books (id, title, author, saved_at, saved_by) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO UPDATE
                SET title = EXCLUDED.title, author = EXCLUDED.author,
                    saved_at = EXCLUDED.saved_at, saved_by = EXCLUDED.saved_by,
                    updated_at = CASE WHEN (books.title, books.author)
                                           IS DISTINCT FROM (EXCLUDED.title, EXCLUDED.author)
                                      THEN now() ELSE books.updated_at END
             WHERE (EXCLUDED.saved_at, EXCLUDED.saved_by) > (books.saved_at, books.saved_by)",
        )
        .bind(id)
        .bind(title)
        .bind(author)
        .bind(revision.accepted_at)
        .bind(revision.envelope_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_book(&self, id: Uuid) -> Result<Option<Book>, StoreError> {
        let book = sqlx::query_as(
            "SELECT id, title, author, stock, price, offer_id FROM books WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(book)
    }

    async fn list_books(&self, page: u32, page_size: u32) -> Result<Vec<Book>, StoreError> {
        let limit = i64::from(page_size);
        let offset = i64::from(page.saturating_sub(1)) * limit;
        let books = sqlx::query_as(LIST_BOOKS_SQL)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        Ok(books)
    }

    /// The book row is locked first so that the recomputation reads offers
    /// *after* any concurrent refresh of the same book committed.
    async fn refresh_cheapest_offer(&self, book_id: Uuid) -> Result<(), StoreError> {
        // One round trip: the function (migration
        // `20261123120000_refresh_cheapest_offer.sql`) locks the row, then
        // updates it from a snapshot taken after the lock, in the implicit
        // transaction of this statement.
        sqlx::query("SELECT refresh_cheapest_offer($1)")
            .bind(book_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
