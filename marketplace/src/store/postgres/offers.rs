//! Offers on PostgreSQL.

use async_trait::async_trait;
use bus_core::Envelope;
use sqlx::types::Json;
use uuid::Uuid;

use super::PgStore;
use crate::{
    model::{conflicts, NewOffer, Offer, OfferOutcome},
    store::{OfferRepository, StoreError},
};

/// `GET /offers/{bookId}`: the first `$2` offers of book `$1`, cheapest
/// first (ties by offer id), with their seller's name; one descent of
/// `offers_by_book_price`, already in the answer's order.
pub const LIST_OFFERS_SQL: &str =
    "SELECT o.id, o.book_id, o.seller_id, u.name AS seller_name, o.price, o.stock
     FROM offers o LEFT JOIN users u ON u.id = o.seller_id
     WHERE o.book_id = $1
     ORDER BY o.price, o.id
     LIMIT $2";

/// The next page: the first `$2` offers of book `$1` after offer `$3` in
/// the same order (keyset on `(price, id)`: a range of the same index,
/// however deep the page). None if `$3` is not an offer of the book.
pub const LIST_OFFERS_AFTER_SQL: &str =
    "SELECT o.id, o.book_id, o.seller_id, u.name AS seller_name, o.price, o.stock
     FROM offers o LEFT JOIN users u ON u.id = o.seller_id
     WHERE o.book_id = $1
       AND (o.price, o.id) > (SELECT a.price, a.id FROM offers a WHERE a.id = $3 AND a.book_id = $1)
     ORDER BY o.price, o.id
     LIMIT $2";

#[async_trait]
impl OfferRepository for PgStore {
    async fn create_offer(
        &self,
        offer: &NewOffer,
        event: &Envelope,
    ) -> Result<OfferOutcome, StoreError> {
        let fingerprint = offer.fingerprint();
        // One statement, so one round trip and one implicit transaction: the
        // offer is inserted only if its book and seller exist and it is new,
        // and the event is staged in the outbox (the table of
        // `bus_core::outbox::postgres::SCHEMA`) only if the offer was inserted.
        let (book_exists, seller_exists, staged): (bool, bool, i64) = sqlx::query_as(
            "WITH book AS (SELECT EXISTS (SELECT 1 FROM books WHERE id = $2) AS found),
                  seller AS (SELECT EXISTS (SELECT 1 FROM users WHERE id = $3) AS found),
                  inserted AS (
                      INSERT INTO offers (id, book_id, seller_id, price, stock, fingerprint)
                      SELECT $1, $2, $3, $4, $5, $7
                      WHERE (SELECT found FROM book) AND (SELECT found FROM seller)
                      ON CONFLICT (id) DO NOTHING
                      RETURNING id),
                  staged AS (
                      INSERT INTO bus_outbox (envelope) SELECT $6 FROM inserted
                      RETURNING position)
             SELECT (SELECT found FROM book), (SELECT found FROM seller),
                    (SELECT count(*) FROM staged)",
        )
        .bind(offer.id)
        .bind(offer.book_id)
        .bind(offer.seller_id)
        .bind(offer.price)
        .bind(offer.stock)
        .bind(Json(event))
        .bind(&fingerprint)
        .fetch_one(&self.pool)
        .await?;
        if !book_exists {
            return Ok(OfferOutcome::BookMissing);
        }
        if !seller_exists {
            return Ok(OfferOutcome::SellerMissing);
        }
        if staged > 0 {
            return Ok(OfferOutcome::Created);
        }
        // Not inserted: the id exists. Which payload wrote it decides
        // between a redelivery and a conflict.
        let stored: Option<String> =
            sqlx::query_scalar("SELECT fingerprint FROM offers WHERE id = $1")
                .bind(offer.id)
                .fetch_one(&self.pool)
                .await?;
        Ok(match stored {
            Some(stored) if conflicts(Some(&stored), &fingerprint) => {
                OfferOutcome::IdConflict { stored }
            }
            _ => OfferOutcome::AlreadyExists,
        })
    }

    async fn list_offers(
        &self,
        book_id: Uuid,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Offer>, StoreError> {
        let limit = i64::from(limit);
        let offers = match after {
            None => {
                sqlx::query_as(LIST_OFFERS_SQL)
                    .bind(book_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(after) => {
                sqlx::query_as(LIST_OFFERS_AFTER_SQL)
                    .bind(book_id)
                    .bind(limit)
                    .bind(after)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(offers)
    }
}
