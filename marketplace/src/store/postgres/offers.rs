//! Offers on PostgreSQL.

use async_trait::async_trait;
use bus_core::{outbox, Envelope};
use uuid::Uuid;

use super::PgStore;
use crate::{
    commands::CreateOffer,
    queries::Offer,
    store::{OfferOutcome, OfferRepository, StoreError},
};

#[async_trait]
impl OfferRepository for PgStore {
    async fn create_offer(
        &self,
        offer: &CreateOffer,
        event: &Envelope,
    ) -> Result<OfferOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (book_exists, seller_exists): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM books WHERE id = $1),
                    EXISTS (SELECT 1 FROM users WHERE id = $2)",
        )
        .bind(offer.book_id)
        .bind(offer.seller_id)
        .fetch_one(&mut *tx)
        .await?;
        if !book_exists {
            return Ok(OfferOutcome::BookMissing);
        }
        if !seller_exists {
            return Ok(OfferOutcome::SellerMissing);
        }
        let stock = i32::try_from(offer.stock)
            .map_err(|_| StoreError::Invalid(format!("stock {} out of range", offer.stock)))?;
        let inserted = sqlx::query(
            "INSERT INTO offers (id, book_id, seller_id, price, stock) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(offer.id)
        .bind(offer.book_id)
        .bind(offer.seller_id)
        .bind(offer.price)
        .bind(stock)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(OfferOutcome::AlreadyExists);
        }
        outbox::postgres::stage(&mut tx, event).await?;
        tx.commit().await?;
        Ok(OfferOutcome::Created)
    }

    async fn list_offers(&self, book_id: Uuid) -> Result<Vec<Offer>, StoreError> {
        let offers = sqlx::query_as(
            "SELECT o.id, o.book_id, o.seller_id, u.name AS seller_name, o.price, o.stock
             FROM offers o LEFT JOIN users u ON u.id = o.seller_id
             WHERE o.book_id = $1
             ORDER BY o.price, o.id",
        )
        .bind(book_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(offers)
    }
}
