//! Offers on SQLite.

use async_trait::async_trait;
use bus_core::{durable::sqlite::record_receipts, outbox, Envelope, Receipt};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{from_cents, read_time, stored_time, to_cents, SqliteStore};
use crate::{
    model::{conflicts, ListPosition, NewOffer, Offer, OfferOutcome, SellerOffer},
    store::{OfferRepository, StoreError},
};

#[derive(sqlx::FromRow)]
struct OfferRow {
    id: Uuid,
    book_id: Uuid,
    seller_id: Uuid,
    seller_name: Option<String>,
    price_cents: i64,
    stock: i32,
}

/// One row of [`LIST_SELLER_OFFERS_SQL`].
#[derive(sqlx::FromRow)]
struct SellerOfferRow {
    id: Uuid,
    book_id: Uuid,
    title: Option<String>,
    seller_id: Uuid,
    seller_name: Option<String>,
    price_cents: i64,
    stock: i32,
    created_at: String,
}

/// A page of seller `?1`'s offers, sold-out ones included, newest first,
/// `?2` at most, with their book's title and their seller's name:
/// `$after` narrows them to those after a position of the list. One range
/// of `offers_by_seller` (`seller_id`, `created_at`, `id`), read backwards.
macro_rules! seller_offers_sql {
    ($after:literal) => {
        concat!(
            "SELECT o.id, o.book_id, b.title, o.seller_id, u.name AS seller_name,
                    o.price_cents, o.stock, o.created_at
             FROM offers o
             LEFT JOIN books b ON b.id = o.book_id
             LEFT JOIN users u ON u.id = o.seller_id
             WHERE o.seller_id = ?1 ",
            $after,
            "
             ORDER BY o.created_at DESC, o.id DESC
             LIMIT ?2"
        )
    };
}

/// The first page of seller `?1`'s offers (at most `?2`), newest first.
const LIST_SELLER_OFFERS_SQL: &str = seller_offers_sql!("");

/// The next page: the offers after the position (`?3` created at, as
/// stored, `?4` id) of the previous page's last one.
const LIST_SELLER_OFFERS_AFTER_SQL: &str =
    seller_offers_sql!("AND (o.created_at, o.id) < (?3, ?4)");

#[async_trait]
impl OfferRepository for SqliteStore {
    async fn create_offer(
        &self,
        offer: &NewOffer,
        event: &Envelope,
        receipt: Option<Receipt>,
    ) -> Result<OfferOutcome, StoreError> {
        let mut tx = self.writer.begin().await?;
        let outcome = create_offer_on(&mut tx, offer, event).await?;
        if outcome.is_done() {
            record_receipts(&mut tx, receipt).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    async fn create_offers(
        &self,
        offers: &[(NewOffer, Envelope, Option<Receipt>)],
    ) -> Result<Vec<OfferOutcome>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut outcomes = Vec::with_capacity(offers.len());
        let mut done = Vec::with_capacity(offers.len());
        for (offer, event, receipt) in offers {
            let outcome = create_offer_on(&mut tx, offer, event).await?;
            if outcome.is_done() {
                done.extend(*receipt);
            }
            outcomes.push(outcome);
        }
        record_receipts(&mut tx, done).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Keyset paging on `(price_cents, id)`, a range of
    /// `offers_by_book_price` however deep the page.
    async fn list_offers(
        &self,
        book_id: Uuid,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Offer>, StoreError> {
        let offers: Vec<OfferRow> = sqlx::query_as(
            "SELECT o.id, o.book_id, o.seller_id, u.name AS seller_name, o.price_cents, o.stock
             FROM offers o LEFT JOIN users u ON u.id = o.seller_id
             WHERE o.book_id = ?1
               AND (?3 IS NULL OR (o.price_cents, o.id) >
                    (SELECT a.price_cents, a.id FROM offers a WHERE a.id = ?3 AND a.book_id = ?1))
             ORDER BY o.price_cents, o.id
             LIMIT ?2",
        )
        .bind(book_id)
        .bind(i64::from(limit))
        .bind(after)
        .fetch_all(&self.reader)
        .await?;
        Ok(offers
            .into_iter()
            .map(|row| Offer {
                id: row.id,
                book_id: row.book_id,
                seller_id: row.seller_id,
                seller_name: row.seller_name,
                price: from_cents(row.price_cents),
                stock: row.stock,
            })
            .collect())
    }

    async fn list_seller_offers(
        &self,
        seller_id: Uuid,
        after: Option<ListPosition>,
        limit: u32,
    ) -> Result<Vec<SellerOffer>, StoreError> {
        let limit = i64::from(limit);
        let rows: Vec<SellerOfferRow> = match after {
            None => {
                sqlx::query_as(LIST_SELLER_OFFERS_SQL)
                    .bind(seller_id)
                    .bind(limit)
                    .fetch_all(&self.reader)
                    .await?
            }
            Some(after) => {
                sqlx::query_as(LIST_SELLER_OFFERS_AFTER_SQL)
                    .bind(seller_id)
                    .bind(limit)
                    .bind(stored_time(after.created_at))
                    .bind(after.id)
                    .fetch_all(&self.reader)
                    .await?
            }
        };
        rows.into_iter()
            .map(|row| {
                Ok(SellerOffer {
                    id: row.id,
                    book_id: row.book_id,
                    title: row.title,
                    seller_id: row.seller_id,
                    seller_name: row.seller_name,
                    price: from_cents(row.price_cents),
                    stock: row.stock,
                    created_at: read_time(&row.created_at)?,
                })
            })
            .collect()
    }
}

/// Inserts one offer on `conn`, the writer's transaction, and stages its
/// event there when it is new.
async fn create_offer_on(
    conn: &mut SqliteConnection,
    offer: &NewOffer,
    event: &Envelope,
) -> Result<OfferOutcome, StoreError> {
    let price_cents = to_cents(offer.price)?;
    let fingerprint = offer.fingerprint();
    let (book_exists, seller_exists): (bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM books WHERE id = ?1),
                EXISTS (SELECT 1 FROM users WHERE id = ?2)",
    )
    .bind(offer.book_id)
    .bind(offer.seller_id)
    .fetch_one(&mut *conn)
    .await?;
    if !book_exists {
        return Ok(OfferOutcome::BookMissing);
    }
    if !seller_exists {
        return Ok(OfferOutcome::SellerMissing);
    }
    let inserted = sqlx::query(
        "INSERT INTO offers (id, book_id, seller_id, price_cents, stock, fingerprint)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(offer.id)
    .bind(offer.book_id)
    .bind(offer.seller_id)
    .bind(price_cents)
    .bind(offer.stock)
    .bind(&fingerprint)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        // The id exists: which payload wrote it decides between a
        // redelivery and a conflict.
        let stored: Option<String> =
            sqlx::query_scalar("SELECT fingerprint FROM offers WHERE id = ?1")
                .bind(offer.id)
                .fetch_one(&mut *conn)
                .await?;
        return Ok(match stored {
            Some(stored) if conflicts(Some(&stored), &fingerprint) => {
                OfferOutcome::IdConflict { stored }
            }
            _ => OfferOutcome::AlreadyExists,
        });
    }
    outbox::sqlite::stage(&mut *conn, event).await?;
    Ok(OfferOutcome::Created)
}
