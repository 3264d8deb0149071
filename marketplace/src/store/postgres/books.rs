//! Books and their cheapest in-stock offer on PostgreSQL.

use async_trait::async_trait;
use bus_core::{durable::postgres::record_receipts, Receipt};
use sqlx::PgConnection;
use uuid::Uuid;

use super::PgStore;
use crate::{
    model::{may_save_book, Book, BookRegistration, BookSaveOutcome, Revision},
    store::{BookRepository, BookSave, StoreError},
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
        if editor.is_none() && receipt.is_none() {
            // No owner to check, nothing to record: one statement, as
            // before authentication.
            let mut conn = self.pool.acquire().await?;
            return save_book_on(&mut conn, &save).await;
        }
        let mut tx = self.pool.begin().await?;
        let outcome = save_book_on(&mut tx, &save).await?;
        if outcome == BookSaveOutcome::Applied {
            record_receipts(&mut tx, receipt).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    async fn save_books(&self, saves: &[BookSave]) -> Result<Vec<BookSaveOutcome>, StoreError> {
        // In id order (stable: two saves of one book keep theirs), so that
        // two batches touching the same books lock them in the same order.
        let mut ordered: Vec<(usize, &BookSave)> = saves.iter().enumerate().collect();
        ordered.sort_by_key(|(_, save)| save.id);
        let mut outcomes = vec![BookSaveOutcome::Applied; saves.len()];
        let mut tx = self.pool.begin().await?;
        for (index, save) in ordered {
            outcomes[index] = save_book_on(&mut tx, save).await?;
        }
        record_receipts(&mut tx, BookSave::applied_receipts(saves, &outcomes)).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn book_registration(&self, id: Uuid) -> Result<Option<BookRegistration>, StoreError> {
        let stored: Option<(Option<Uuid>,)> =
            sqlx::query_as("SELECT registered_by FROM books WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(stored.map(|(registered_by,)| BookRegistration { registered_by }))
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

    /// Each book row is locked first so that the recomputation reads offers
    /// *after* any concurrent refresh of the same book committed.
    async fn refresh_cheapest_offers(
        &self,
        book_ids: &[Uuid],
        receipts: &[Receipt],
    ) -> Result<(), StoreError> {
        // In id order, once each, so that concurrent refreshes lock books
        // in the same order.
        let mut book_ids = book_ids.to_vec();
        book_ids.sort_unstable();
        book_ids.dedup();
        // One round trip per book: the function (migration
        // `20261123120000_refresh_cheapest_offer.sql`) locks the row, then
        // updates it from a snapshot taken after the lock.
        let refresh = "SELECT refresh_cheapest_offer($1)";
        if let ([book_id], []) = (book_ids.as_slice(), receipts) {
            // One statement, in its implicit transaction.
            sqlx::query(refresh)
                .bind(book_id)
                .execute(&self.pool)
                .await?;
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for book_id in book_ids {
            sqlx::query(refresh).bind(book_id).execute(&mut *tx).await?;
        }
        record_receipts(&mut tx, receipts.iter().copied()).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Saves one book on `conn`, inside the caller's transaction when it has an
/// editor (the owner check and the write must not interleave with another
/// save).
async fn save_book_on(
    conn: &mut PgConnection,
    save: &BookSave,
) -> Result<BookSaveOutcome, StoreError> {
    let Some(editor) = save.editor else {
        // No owner to check: one statement, as before authentication.
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
        .bind(save.id)
        .bind(&save.title)
        .bind(&save.author)
        .bind(save.revision.accepted_at)
        .bind(save.revision.envelope_id)
        .execute(&mut *conn)
        .await?;
        return Ok(BookSaveOutcome::Applied);
    };
    // Twice at most: when two users register the same new id at once,
    // one insert wins and the other finds its row the second time.
    for _ in 0..2 {
        let stored: Option<(Option<Uuid>,)> =
            sqlx::query_as("SELECT registered_by FROM books WHERE id = $1 FOR UPDATE")
                .bind(save.id)
                .fetch_optional(&mut *conn)
                .await?;
        let stored = stored.map(|(registered_by,)| BookRegistration { registered_by });
        if let Err(refusal) = may_save_book(save.id, stored, Some(editor)) {
            return Ok(BookSaveOutcome::Refused(refusal));
        }
        if stored.is_some() {
            sqlx::query(
                "UPDATE books
                    SET title = $2, author = $3, saved_at = $4, saved_by = $5,
                        updated_at = CASE WHEN (title, author) IS DISTINCT FROM ($2, $3)
                                          THEN now() ELSE updated_at END
                  WHERE id = $1 AND ($4, $5) > (saved_at, saved_by)",
            )
            .bind(save.id)
            .bind(&save.title)
            .bind(&save.author)
            .bind(save.revision.accepted_at)
            .bind(save.revision.envelope_id)
            .execute(&mut *conn)
            .await?;
            return Ok(BookSaveOutcome::Applied);
        }
        let inserted = sqlx::query(
            "INSERT INTO books (id, title, author, saved_at, saved_by, registered_by)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(save.id)
        .bind(&save.title)
        .bind(&save.author)
        .bind(save.revision.accepted_at)
        .bind(save.revision.envelope_id)
        .bind(editor)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(BookSaveOutcome::Applied);
        }
    }
    Err(StoreError::Invalid(format!(
        "book {} neither inserted nor found while saving",
        save.id
    )))
}
