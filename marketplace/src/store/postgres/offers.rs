//! Offers on PostgreSQL.

use std::collections::HashSet;

use async_trait::async_trait;
use bus_core::{durable::postgres::record_receipts, Envelope, Receipt};
use sqlx::{types::Json, PgConnection};
use uuid::Uuid;

use super::PgStore;
use crate::{
    model::{conflicts, ListPosition, NewOffer, Offer, OfferOutcome, SellerOffer},
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

/// A page of seller `$1`'s offers, sold-out ones included, newest first,
/// `$2` at most, with their book's title and their seller's name:
/// `$after` narrows them to those after a position of the list. One range
/// of `offers_by_seller` (`seller_id`, `created_at`, `id`), read backwards.
macro_rules! seller_offers_sql {
    ($after:literal) => {
        concat!(
            "SELECT o.id, o.book_id, b.title, o.seller_id, u.name AS seller_name,
                    o.price, o.stock, o.created_at
             FROM offers o
             LEFT JOIN books b ON b.id = o.book_id
             LEFT JOIN users u ON u.id = o.seller_id
             WHERE o.seller_id = $1 ",
            $after,
            "
             ORDER BY o.created_at DESC, o.id DESC
             LIMIT $2"
        )
    };
}

/// `GET /users/{id}/offers`: the first page of seller `$1`'s offers (at
/// most `$2`), newest first.
const LIST_SELLER_OFFERS_SQL: &str = seller_offers_sql!("");

/// The next page: the offers after the position (`$3` created at, `$4`
/// id) of the previous page's last one, in the same order.
const LIST_SELLER_OFFERS_AFTER_SQL: &str =
    seller_offers_sql!("AND (o.created_at, o.id) < ($3, $4)");

#[async_trait]
impl OfferRepository for PgStore {
    async fn create_offer(
        &self,
        offer: &NewOffer,
        event: &Envelope,
        receipt: Option<Receipt>,
    ) -> Result<OfferOutcome, StoreError> {
        if receipt.is_none() {
            // Nothing to record with it: one statement.
            let mut conn = self.pool.acquire().await?;
            return create_offer_on(&mut conn, offer, event).await;
        }
        let mut tx = self.pool.begin().await?;
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
        // Each id once in the multi-row statement; a repeated id (the same
        // offer sent twice, or an id reused) is decided after it, in the
        // same transaction, so it sees the first one.
        let mut seen = HashSet::with_capacity(offers.len());
        let (first, repeated): (Vec<usize>, Vec<usize>) =
            (0..offers.len()).partition(|&index| seen.insert(offers[index].0.id));
        let mut outcomes: Vec<Option<OfferOutcome>> = vec![None; offers.len()];
        let mut tx = self.pool.begin().await?;
        if !first.is_empty() {
            let mut first = first;
            // In id order, so that concurrent batches take their row locks
            // in the same order.
            first.sort_by_key(|&index| offers[index].0.id);
            let mut positions = Vec::with_capacity(first.len());
            let mut ids = Vec::with_capacity(first.len());
            let mut book_ids = Vec::with_capacity(first.len());
            let mut seller_ids = Vec::with_capacity(first.len());
            let mut prices = Vec::with_capacity(first.len());
            let mut stocks = Vec::with_capacity(first.len());
            let mut fingerprints = Vec::with_capacity(first.len());
            let mut events = Vec::with_capacity(first.len());
            for &index in &first {
                let (offer, event, _) = &offers[index];
                positions.push(i32::try_from(index).unwrap_or(i32::MAX));
                ids.push(offer.id);
                book_ids.push(offer.book_id);
                seller_ids.push(offer.seller_id);
                prices.push(offer.price);
                stocks.push(offer.stock);
                fingerprints.push(offer.fingerprint());
                events.push(Json(event));
            }
            let rows: Vec<(i32, bool, bool, bool, Option<String>)> =
                sqlx::query_as(CREATE_OFFERS_SQL)
                    .bind(&positions)
                    .bind(&ids)
                    .bind(&book_ids)
                    .bind(&seller_ids)
                    .bind(&prices)
                    .bind(&stocks)
                    .bind(&fingerprints)
                    .bind(&events)
                    .fetch_all(&mut *tx)
                    .await?;
            for (position, book_exists, seller_exists, created, stored) in rows {
                let Some(index) = usize::try_from(position).ok().filter(|i| *i < offers.len())
                else {
                    continue;
                };
                let fingerprint = offers[index].0.fingerprint();
                outcomes[index] = Some(offer_outcome(
                    book_exists,
                    seller_exists,
                    created,
                    stored,
                    &fingerprint,
                ));
            }
        }
        for index in repeated {
            let (offer, event, _) = &offers[index];
            outcomes[index] = Some(create_offer_on(&mut tx, offer, event).await?);
        }
        let outcomes = outcomes
            .into_iter()
            .zip(offers)
            .map(|(outcome, (offer, _, _))| {
                outcome.ok_or_else(|| {
                    StoreError::Invalid(format!("offer {}: no outcome for its insert", offer.id))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let done = offers
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| outcome.is_done())
            .filter_map(|((_, _, receipt), _)| *receipt);
        record_receipts(&mut tx, done).await?;
        tx.commit().await?;
        Ok(outcomes)
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

    async fn list_seller_offers(
        &self,
        seller_id: Uuid,
        after: Option<ListPosition>,
        limit: u32,
    ) -> Result<Vec<SellerOffer>, StoreError> {
        let limit = i64::from(limit);
        let offers = match after {
            None => {
                sqlx::query_as(LIST_SELLER_OFFERS_SQL)
                    .bind(seller_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(after) => {
                sqlx::query_as(LIST_SELLER_OFFERS_AFTER_SQL)
                    .bind(seller_id)
                    .bind(limit)
                    .bind(after.created_at)
                    .bind(after.id)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(offers)
    }
}

/// Many offers at once (`create_offers`): `$1` their positions in the
/// batch, then one array per column, `$8` the events. Offers whose book and
/// seller exist and whose id is new are inserted, and their events staged
/// in the outbox (the table of `bus_core::outbox::postgres::SCHEMA`), in
/// one statement; one row per offer says what happened to it: book found,
/// seller found, inserted, and the fingerprint of an offer already there.
/// (`staged`, like every data-modifying `WITH`, runs whether or not the
/// final `SELECT` reads it.)
const CREATE_OFFERS_SQL: &str = "
    WITH input AS (
             SELECT * FROM unnest($1::int4[], $2::uuid[], $3::uuid[], $4::uuid[],
                                  $5::numeric[], $6::int4[], $7::text[], $8::jsonb[])
                 AS t(position, id, book_id, seller_id, price, stock, fingerprint, envelope)),
         checked AS (
             SELECT i.*,
                    EXISTS (SELECT 1 FROM books b WHERE b.id = i.book_id) AS book_found,
                    EXISTS (SELECT 1 FROM users u WHERE u.id = i.seller_id) AS seller_found
             FROM input i),
         inserted AS (
             INSERT INTO offers (id, book_id, seller_id, price, stock, fingerprint)
             SELECT id, book_id, seller_id, price, stock, fingerprint FROM checked
             WHERE book_found AND seller_found
             ORDER BY id
             ON CONFLICT (id) DO NOTHING
             RETURNING id),
         staged AS (
             INSERT INTO bus_outbox (envelope)
             SELECT c.envelope FROM checked c JOIN inserted n ON n.id = c.id
             ORDER BY c.position
             RETURNING position)
    SELECT c.position, c.book_found, c.seller_found,
           EXISTS (SELECT 1 FROM inserted n WHERE n.id = c.id) AS created,
           (SELECT o.fingerprint FROM offers o WHERE o.id = c.id) AS stored
    FROM checked c
    ORDER BY c.position";

/// What happened to an offer, from what its insert found.
fn offer_outcome(
    book_exists: bool,
    seller_exists: bool,
    created: bool,
    stored: Option<String>,
    fingerprint: &str,
) -> OfferOutcome {
    if !book_exists {
        return OfferOutcome::BookMissing;
    }
    if !seller_exists {
        return OfferOutcome::SellerMissing;
    }
    if created {
        return OfferOutcome::Created;
    }
    // Not inserted: the id exists. Which payload wrote it decides between a
    // redelivery and a conflict.
    match stored {
        Some(stored) if conflicts(Some(&stored), fingerprint) => {
            OfferOutcome::IdConflict { stored }
        }
        _ => OfferOutcome::AlreadyExists,
    }
}

/// Inserts one offer on `conn` in one statement (its own implicit
/// transaction, or the caller's).
async fn create_offer_on(
    conn: &mut PgConnection,
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
    .fetch_one(&mut *conn)
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
    let stored: Option<String> = sqlx::query_scalar("SELECT fingerprint FROM offers WHERE id = $1")
        .bind(offer.id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(match stored {
        Some(stored) if conflicts(Some(&stored), &fingerprint) => {
            OfferOutcome::IdConflict { stored }
        }
        _ => OfferOutcome::AlreadyExists,
    })
}
