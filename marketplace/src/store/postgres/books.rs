//! Books and their cheapest in-stock offer on PostgreSQL.

use async_trait::async_trait;
use uuid::Uuid;

use super::PgStore;
use crate::{
    commands::SaveBook,
    queries::{Book, ListBooks},
    store::{BookRepository, StoreError},
};

#[async_trait]
impl BookRepository for PgStore {
    async fn save_book(&self, book: &SaveBook) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO books (id, title, author) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE
                SET title = EXCLUDED.title, author = EXCLUDED.author, updated_at = now()
             WHERE (books.title, books.author) IS DISTINCT FROM (EXCLUDED.title, EXCLUDED.author)",
        )
        .bind(book.id)
        .bind(&book.title)
        .bind(&book.author)
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

    async fn list_books(&self, page: ListBooks) -> Result<Vec<Book>, StoreError> {
        let limit = i64::from(page.page_size);
        let offset = i64::from(page.page.saturating_sub(1)) * limit;
        let books = sqlx::query_as(
            "SELECT id, title, author, stock, price, offer_id FROM books
             ORDER BY created_at, id LIMIT $1 OFFSET $2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        Ok(books)
    }

    /// The book row is locked first so that the recomputation reads offers
    /// *after* any concurrent refresh of the same book committed.
    async fn refresh_cheapest_offer(&self, book_id: Uuid) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT 1 FROM books WHERE id = $1 FOR UPDATE")
            .bind(book_id)
            .execute(&mut *tx)
            .await?;
        // A new statement after the lock: READ COMMITTED gives it a fresh
        // snapshot that includes everything committed before the lock.
        sqlx::query(
            "UPDATE books SET offer_id   = cheapest.id,
                              price      = COALESCE(cheapest.price, 0),
                              stock      = COALESCE(cheapest.stock, 0),
                              updated_at = now()
             FROM (SELECT 1) AS one
             LEFT JOIN LATERAL (
                 SELECT id, price, stock FROM offers
                 WHERE book_id = $1 AND stock > 0
                 ORDER BY price, id LIMIT 1
             ) AS cheapest ON true
             WHERE books.id = $1
               AND (books.offer_id, books.price, books.stock)
                   IS DISTINCT FROM (cheapest.id, COALESCE(cheapest.price, 0), COALESCE(cheapest.stock, 0))",
        )
        .bind(book_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
