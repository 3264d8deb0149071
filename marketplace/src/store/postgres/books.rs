//! Books and their cheapest in-stock offer on PostgreSQL.

use async_trait::async_trait;
use bus_core::{durable::postgres::record_receipts, Receipt};
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::PgStore;
use crate::{
    model::{
        may_save_book, Book, BookKey, BookRegistration, BookSaveOutcome, Revision, SearchTerms,
    },
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

/// `GET /books?q=`: `$2` books matching the words `$1` after skipping `$3`,
/// best match first, ties by id.
///
/// The GIN index `books_search` finds the matching rows; `ts_rank` (no
/// length normalisation) ranks them from the row's own words, never from
/// statistics of the catalogue, so a book's rank only changes when it is
/// edited. `books_search_query` (migration `20261205000000_book_search.sql`)
/// folds and quotes each word.
pub const SEARCH_BOOKS_SQL: &str = "SELECT id, title, author, stock, price, offer_id, rank
     FROM (SELECT b.id, b.title, b.author, b.stock, b.price, b.offer_id,
                  ts_rank(b.search, q.query) AS rank
             FROM books b, (SELECT books_search_query($1::text[]) AS query) q
            WHERE b.search @@ q.query) AS matches
     ORDER BY rank DESC, id LIMIT $2 OFFSET $3";

/// `GET /books?after=`: `$1` books in registration order from the first
/// (the first cursor page).
pub const FIRST_BOOKS_SQL: &str =
    "SELECT id, title, author, stock, price, offer_id, created_at FROM books
     ORDER BY created_at, id LIMIT $1";

/// `GET /books?after=CURSOR`: `$3` books in registration order after the
/// book at `($1, $2)` (its `created_at` and id): a range scan of the
/// `books_listing` index from the cursor, whatever the cursor's depth.
pub const BOOKS_AFTER_SQL: &str =
    "SELECT id, title, author, stock, price, offer_id, created_at FROM books
     WHERE (created_at, id) > ($1, $2)
     ORDER BY created_at, id LIMIT $3";

/// `GET /books?q=&after=`: `$4` books matching the words `$1`, best match
/// first, after the match of rank `$2` and id `$3` (the whole search from
/// the first when `$3` is null), as [`SEARCH_BOOKS_SQL`] orders them.
pub const SEARCH_BOOKS_AFTER_SQL: &str = "SELECT id, title, author, stock, price, offer_id, rank
     FROM (SELECT b.id, b.title, b.author, b.stock, b.price, b.offer_id,
                  ts_rank(b.search, q.query) AS rank
             FROM books b, (SELECT books_search_query($1::text[]) AS query) q
            WHERE b.search @@ q.query) AS matches
     WHERE $3::uuid IS NULL OR rank < $2::real OR (rank = $2::real AND id > $3)
     ORDER BY rank DESC, id LIMIT $4";

/// The earliest and latest registration keys a cursor may name
/// (microseconds since the epoch: years 1 and 9999), inside what both
/// chrono and PostgreSQL represent.
const REGISTERED_RANGE: (i64, i64) = (-62_135_596_800_000_000, 253_402_300_799_999_999);

/// A book and its rank in a search.
#[derive(sqlx::FromRow)]
struct RankedRow {
    #[sqlx(flatten)]
    book: Book,
    rank: f32,
}

/// A book and its registration time.
#[derive(sqlx::FromRow)]
struct RegisteredRow {
    #[sqlx(flatten)]
    book: Book,
    created_at: DateTime<Utc>,
}

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

    async fn list_books(
        &self,
        offset: u64,
        limit: u32,
        search: Option<&SearchTerms>,
    ) -> Result<Vec<Book>, StoreError> {
        let offset = i64::try_from(offset)
            .map_err(|_| StoreError::Invalid(format!("offset {offset} out of range")))?;
        let Some(search) = search else {
            let books = sqlx::query_as(LIST_BOOKS_SQL)
                .bind(i64::from(limit))
                .bind(offset)
                .fetch_all(&self.pool)
                .await?;
            return Ok(books);
        };
        let rows: Vec<RankedRow> = sqlx::query_as(SEARCH_BOOKS_SQL)
            .bind(search.words())
            .bind(i64::from(limit))
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|row| row.book).collect())
    }

    async fn list_books_after(
        &self,
        after: Option<&BookKey>,
        limit: u32,
        search: Option<&SearchTerms>,
    ) -> Result<Vec<(Book, BookKey)>, StoreError> {
        let limit = i64::from(limit);
        match (search, after) {
            (Some(search), None | Some(BookKey::Ranked(..))) => {
                let (rank, id) = match after {
                    // Ranks are `real`: a key this store handed out holds
                    // one exactly.
                    Some(BookKey::Ranked(rank, id)) => (*rank as f32, Some(*id)),
                    _ => (0.0, None),
                };
                let rows: Vec<RankedRow> = sqlx::query_as(SEARCH_BOOKS_AFTER_SQL)
                    .bind(search.words())
                    .bind(rank)
                    .bind(id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|row| {
                        let key = BookKey::Ranked(f64::from(row.rank), row.book.id);
                        (row.book, key)
                    })
                    .collect())
            }
            (None, None | Some(BookKey::Registered(..))) => {
                let query = match after {
                    Some(BookKey::Registered(micros, id)) => {
                        let (first, last) = REGISTERED_RANGE;
                        let at = DateTime::from_timestamp_micros((*micros).clamp(first, last))
                            .ok_or_else(|| {
                                StoreError::Invalid(format!("registration key {micros}"))
                            })?;
                        sqlx::query_as(BOOKS_AFTER_SQL).bind(at).bind(*id)
                    }
                    _ => sqlx::query_as(FIRST_BOOKS_SQL),
                };
                let rows: Vec<RegisteredRow> = query.bind(limit).fetch_all(&self.pool).await?;
                Ok(rows
                    .into_iter()
                    .map(|row| {
                        let key =
                            BookKey::Registered(row.created_at.timestamp_micros(), row.book.id);
                        (row.book, key)
                    })
                    .collect())
            }
            (_, Some(key)) => Err(StoreError::Invalid(format!(
                "cursor key {key:?} is not of this list's order"
            ))),
        }
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
