//! Books and their cheapest in-stock offer on SQLite.

use async_trait::async_trait;
use bus_core::{durable::sqlite::record_receipts, Receipt};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{from_cents, saved_at, SqliteStore, NOW};
use crate::{
    model::{may_save_book, Book, BookRegistration, BookSaveOutcome, Revision},
    store::{BookRepository, BookSave, StoreError},
};

#[derive(sqlx::FromRow)]
struct BookRow {
    id: Uuid,
    title: String,
    author: String,
    stock: i32,
    price_cents: i64,
    offer_id: Option<Uuid>,
}

impl From<BookRow> for Book {
    fn from(row: BookRow) -> Self {
        Book {
            id: row.id,
            title: row.title,
            author: row.author,
            stock: row.stock,
            price: from_cents(row.price_cents),
            offer_id: row.offer_id,
        }
    }
}

#[async_trait]
impl BookRepository for SqliteStore {
    async fn save_book(
        &self,
        id: Uuid,
        title: &str,
        author: &str,
        editor: Option<Uuid>,
        revision: &Revision,
        receipt: Option<Receipt>,
    ) -> Result<BookSaveOutcome, StoreError> {
        let save = BookSave {
            id,
            title: title.to_owned(),
            author: author.to_owned(),
            editor,
            revision: *revision,
            receipt,
        };
        self.save_books(std::slice::from_ref(&save))
            .await?
            .pop()
            .ok_or_else(|| StoreError::Invalid(format!("book {id}: no outcome for its save")))
    }

    async fn save_books(&self, saves: &[BookSave]) -> Result<Vec<BookSaveOutcome>, StoreError> {
        // One writer at a time: the owner read and the write cannot
        // interleave with another save.
        let mut tx = self.writer.begin().await?;
        let mut outcomes = Vec::with_capacity(saves.len());
        for save in saves {
            outcomes.push(save_book_on(&mut tx, save).await?);
        }
        record_receipts(&mut tx, BookSave::applied_receipts(saves, &outcomes)).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn book_registration(&self, id: Uuid) -> Result<Option<BookRegistration>, StoreError> {
        let stored: Option<(Option<Uuid>,)> =
            sqlx::query_as("SELECT registered_by FROM books WHERE id = ?1")
                .bind(id)
                .fetch_optional(&self.reader)
                .await?;
        Ok(stored.map(|(registered_by,)| BookRegistration { registered_by }))
    }

    async fn get_book(&self, id: Uuid) -> Result<Option<Book>, StoreError> {
        let book: Option<BookRow> = sqlx::query_as(
            "SELECT id, title, author, stock, price_cents, offer_id FROM books WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        Ok(book.map(Book::from))
    }

    /// Registration order is the order of the `position` key.
    async fn list_books(&self, page: u32, page_size: u32) -> Result<Vec<Book>, StoreError> {
        let limit = i64::from(page_size);
        let offset = i64::from(page.saturating_sub(1)) * limit;
        let books: Vec<BookRow> = sqlx::query_as(
            "SELECT id, title, author, stock, price_cents, offer_id FROM books
             ORDER BY position LIMIT ?1 OFFSET ?2",
        )
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.reader)
        .await?;
        Ok(books.into_iter().map(Book::from).collect())
    }

    /// One writer at a time: the reads and the updates cannot interleave
    /// with another refresh.
    async fn refresh_cheapest_offers(
        &self,
        book_ids: &[Uuid],
        receipts: &[Receipt],
    ) -> Result<(), StoreError> {
        let mut book_ids = book_ids.to_vec();
        book_ids.sort_unstable();
        book_ids.dedup();
        let mut tx = self.writer.begin().await?;
        for book_id in book_ids {
            refresh_cheapest_offer_on(&mut tx, book_id).await?;
        }
        record_receipts(&mut tx, receipts.iter().copied()).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Recomputes the book's cheapest in-stock offer on `conn`, the writer's
/// transaction.
async fn refresh_cheapest_offer_on(
    conn: &mut SqliteConnection,
    book_id: Uuid,
) -> Result<(), StoreError> {
    let cheapest: Option<(Uuid, i64, i32)> = sqlx::query_as(
        "SELECT id, price_cents, stock FROM offers
         WHERE book_id = ?1 AND stock > 0
         ORDER BY price_cents, id LIMIT 1",
    )
    .bind(book_id)
    .fetch_optional(&mut *conn)
    .await?;
    let (offer_id, price_cents, stock) = match cheapest {
        Some((id, price_cents, stock)) => (Some(id), price_cents, stock),
        None => (None, 0, 0),
    };
    sqlx::query(&format!(
        "UPDATE books SET offer_id = ?2, price_cents = ?3, stock = ?4, updated_at = {NOW}
         WHERE id = ?1
           AND (offer_id IS NOT ?2 OR price_cents IS NOT ?3 OR stock IS NOT ?4)"
    ))
    .bind(book_id)
    .bind(offer_id)
    .bind(price_cents)
    .bind(stock)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Saves one book on `conn`, the writer's transaction.
async fn save_book_on(
    conn: &mut SqliteConnection,
    save: &BookSave,
) -> Result<BookSaveOutcome, StoreError> {
    if save.editor.is_some() {
        let stored: Option<(Option<Uuid>,)> =
            sqlx::query_as("SELECT registered_by FROM books WHERE id = ?1")
                .bind(save.id)
                .fetch_optional(&mut *conn)
                .await?;
        let stored = stored.map(|(registered_by,)| BookRegistration { registered_by });
        if let Err(refusal) = may_save_book(save.id, stored, save.editor) {
            return Ok(BookSaveOutcome::Refused(refusal));
        }
    }
    // `registered_by` is written by the insert only: an edit never
    // changes who owns the book.
    sqlx::query(&format!(
        "INSERT INTO books (id, title, author, saved_at, saved_by, registered_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE
            SET title = excluded.title, author = excluded.author,
                saved_at = excluded.saved_at, saved_by = excluded.saved_by,
                updated_at = CASE WHEN books.title IS NOT excluded.title
                                    OR books.author IS NOT excluded.author
                                  THEN {NOW} ELSE books.updated_at END
         WHERE (excluded.saved_at, excluded.saved_by) > (books.saved_at, books.saved_by)"
    ))
    .bind(save.id)
    .bind(&save.title)
    .bind(&save.author)
    .bind(saved_at(&save.revision))
    .bind(save.revision.envelope_id)
    .bind(save.editor)
    .execute(&mut *conn)
    .await?;
    Ok(BookSaveOutcome::Applied)
}
