//! Keeps `books.offer_id`, `price` and `stock` on the cheapest offer that
//! still has stock.

use bus_core::{EventHandler, HandlerError, MessageContext};
use sqlx::PgPool;
use uuid::Uuid;

use super::{OfferCreated, StockClaimed};

/// Recomputes a book's cheapest in-stock offer from the offers table.
///
/// Recomputing (rather than applying a delta) makes it idempotent and
/// insensitive to event order: whichever delivery runs last writes the
/// current truth. The book row is locked first so that the recomputation
/// reads offers *after* any concurrent refresh of the same book committed.
#[derive(Debug, Clone)]
pub struct RefreshCheapestOffer {
    pool: PgPool,
}

impl RefreshCheapestOffer {
    /// A subscriber writing to `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Brings each book of `book_ids` up to date, one transaction per book.
    pub async fn refresh(&self, book_ids: &[Uuid]) -> Result<(), HandlerError> {
        let mut book_ids = book_ids.to_vec();
        book_ids.sort_unstable();
        book_ids.dedup();
        for book_id in book_ids {
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
        }
        Ok(())
    }
}

impl EventHandler<OfferCreated> for RefreshCheapestOffer {
    async fn handle(&self, event: OfferCreated, _: MessageContext) -> Result<(), HandlerError> {
        self.refresh(&[event.book_id]).await
    }
}

impl EventHandler<StockClaimed> for RefreshCheapestOffer {
    async fn handle(&self, event: StockClaimed, _: MessageContext) -> Result<(), HandlerError> {
        self.refresh(&event.book_ids).await
    }
}
