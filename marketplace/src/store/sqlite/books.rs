//! Books and their cheapest in-stock offer on SQLite.

use async_trait::async_trait;
use bus_core::{durable::sqlite::record_receipts, Receipt};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{from_cents, saved_at, SqliteStore, NOW};
use crate::{
    model::{
        may_save_book, Book, BookKey, BookRegistration, BookSaveOutcome, Revision, SearchTerms,
    },
    store::{BookRepository, BookSave, StoreError},
};

/// The columns of a book, read from `books`.
const BOOK_COLUMNS: &str = "books.id AS id, books.title AS title, books.author AS author,
     books.stock AS stock, books.price_cents AS price_cents, books.offer_id AS offer_id";

/// A book and its sort key in a list: its `position`, or its `bm25` rank
/// in a search.
#[derive(sqlx::FromRow)]
struct KeyedRow {
    #[sqlx(flatten)]
    book: BookRow,
    position: i64,
    rank: f64,
}

/// The FTS5 query of `search`: each word as an FTS5 string (quoted, its
/// quotes doubled: no word is read as syntax, not even `NEAR` or `AND`),
/// all of them required, the last one as a prefix. The table's tokenizer
/// folds case and accents in the query as it did in the books.
fn match_expression(search: &SearchTerms) -> String {
    let words = search.words();
    words
        .iter()
        .enumerate()
        .map(|(index, word)| {
            let quoted = format!("\"{}\"", word.replace('"', "\"\""));
            if index + 1 == words.len() {
                quoted + "*"
            } else {
                quoted
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

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

    /// Registration order is the order of the `position` key; a search
    /// ranks with FTS5's `bm25` (lower is better).
    async fn list_books(
        &self,
        offset: u64,
        limit: u32,
        search: Option<&SearchTerms>,
    ) -> Result<Vec<Book>, StoreError> {
        let offset = i64::try_from(offset)
            .map_err(|_| StoreError::Invalid(format!("offset {offset} out of range")))?;
        let books: Vec<BookRow> = match search {
            None => {
                sqlx::query_as(
                    "SELECT id, title, author, stock, price_cents, offer_id FROM books
                     ORDER BY position LIMIT ?1 OFFSET ?2",
                )
                .bind(i64::from(limit))
                .bind(offset)
                .fetch_all(&self.reader)
                .await?
            }
            Some(search) => {
                sqlx::query_as(&format!(
                    "SELECT {BOOK_COLUMNS} FROM books_search
                       JOIN books ON books.position = books_search.rowid
                      WHERE books_search MATCH ?1
                      ORDER BY books_search.rank, books.id LIMIT ?2 OFFSET ?3"
                ))
                .bind(match_expression(search))
                .bind(i64::from(limit))
                .bind(offset)
                .fetch_all(&self.reader)
                .await?
            }
        };
        Ok(books.into_iter().map(Book::from).collect())
    }

    /// Keyset pages: on `position` in registration order, on
    /// `(bm25, id)` in a search.
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
                    Some(BookKey::Ranked(rank, id)) => (*rank, Some(*id)),
                    _ => (0.0, None),
                };
                let rows: Vec<KeyedRow> = sqlx::query_as(&format!(
                    "SELECT {BOOK_COLUMNS}, books.position AS position, books_search.rank AS rank
                       FROM books_search
                       JOIN books ON books.position = books_search.rowid
                      WHERE books_search MATCH ?1
                        AND (?3 IS NULL OR books_search.rank > ?2
                             OR (books_search.rank = ?2 AND books.id > ?3))
                      ORDER BY books_search.rank, books.id LIMIT ?4"
                ))
                .bind(match_expression(search))
                .bind(rank)
                .bind(id)
                .bind(limit)
                .fetch_all(&self.reader)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|row| {
                        let key = BookKey::Ranked(row.rank, row.book.id);
                        (Book::from(row.book), key)
                    })
                    .collect())
            }
            (None, None | Some(BookKey::Registered(..))) => {
                let position = match after {
                    Some(BookKey::Registered(position, _)) => *position,
                    _ => i64::MIN,
                };
                let rows: Vec<KeyedRow> = sqlx::query_as(&format!(
                    "SELECT {BOOK_COLUMNS}, books.position AS position, 0.0 AS rank FROM books
                      WHERE books.position > ?1
                      ORDER BY books.position LIMIT ?2"
                ))
                .bind(position)
                .bind(limit)
                .fetch_all(&self.reader)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|row| {
                        let key = BookKey::Registered(row.position, row.book.id);
                        (Book::from(row.book), key)
                    })
                    .collect())
            }
            (_, Some(key)) => Err(StoreError::Invalid(format!(
                "cursor key {key:?} is not of this list's order"
            ))),
        }
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
