//! Orders on SQLite: stock claimed atomically, exactly once.

use async_trait::async_trait;
use bus_core::outbox;
use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{SqliteStore, NOW};
use crate::{
    queries::{Order, OrderLine},
    store::{Claim, ConfirmedEvent, NewOrder, OrderOutcome, OrderRepository, StoreError},
};

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    user_id: Uuid,
    status: String,
    reason: Option<String>,
    created_at: String,
}

/// The same rules as on PostgreSQL: the order row is inserted first, so a
/// redelivered command finds it `confirmed` or `rejected` and changes
/// nothing; stock is claimed with conditional updates inside a savepoint
/// rolled back as a whole if any item lacks stock. The single writing
/// connection serialises orders, so no row lock is needed.
#[async_trait]
impl OrderRepository for SqliteStore {
    async fn apply_order(
        &self,
        order: &NewOrder,
        confirmed: ConfirmedEvent<'_>,
    ) -> Result<OrderOutcome, StoreError> {
        let mut tx = self.writer.begin().await?;
        sqlx::query(
            "INSERT INTO orders (id, user_id, status) VALUES (?1, ?2, 'pending')
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(order.id)
        .bind(order.user_id)
        .execute(&mut *tx)
        .await?;
        let (status,): (String,) = sqlx::query_as("SELECT status FROM orders WHERE id = ?1")
            .bind(order.id)
            .fetch_one(&mut *tx)
            .await?;
        if status != "pending" {
            return Ok(OrderOutcome::AlreadyApplied);
        }

        let mut claims = sqlx::Connection::begin(&mut *tx).await?;
        let claim = claim_stock(&mut claims, &order.quantities).await?;
        let (outcome, book_ids) = claim.outcome(order.reject_missing_offers);
        match outcome {
            OrderOutcome::Confirmed => {
                claims.commit().await?;
                outbox::sqlite::stage(&mut tx, &confirmed(book_ids)?).await?;
            }
            OrderOutcome::OfferMissing(_) => {
                claims.rollback().await?;
                // Keep the order visible as `pending` while we wait.
                tx.commit().await?;
                return Ok(outcome);
            }
            _ => claims.rollback().await?,
        }
        let (status, reason) = outcome.status_and_reason();
        for &(offer_id, quantity) in &order.quantities {
            sqlx::query(
                "INSERT INTO order_items (order_id, offer_id, quantity) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(order.id)
            .bind(offer_id)
            .bind(quantity)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(&format!(
            "UPDATE orders SET status = ?2, reason = ?3, updated_at = {NOW} WHERE id = ?1"
        ))
        .bind(order.id)
        .bind(status)
        .bind(reason)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let order: Option<OrderRow> = sqlx::query_as(
            "SELECT id, user_id, status, reason, created_at FROM orders WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        let Some(row) = order else {
            return Ok(None);
        };
        let items: Vec<OrderLine> = sqlx::query_as(
            "SELECT offer_id, quantity FROM order_items WHERE order_id = ?1 ORDER BY offer_id",
        )
        .bind(id)
        .fetch_all(&self.reader)
        .await?;
        let created_at = DateTime::parse_from_rfc3339(&row.created_at)
            .map_err(|error| {
                StoreError::Invalid(format!("created_at {:?}: {error}", row.created_at))
            })?
            .with_timezone(&Utc);
        Ok(Some(Order {
            id: row.id,
            user_id: row.user_id,
            status: row.status,
            reason: row.reason,
            items,
            created_at,
        }))
    }
}

/// Claims each quantity in offer-id order; stops at the first item that
/// cannot be served. The caller rolls back on anything but `Claimed`.
async fn claim_stock(
    conn: &mut SqliteConnection,
    quantities: &[(Uuid, i32)],
) -> Result<Claim, sqlx::Error> {
    let mut book_ids = Vec::with_capacity(quantities.len());
    for &(offer_id, quantity) in quantities {
        let claimed: Option<(Uuid,)> = sqlx::query_as(
            "UPDATE offers SET stock = stock - ?2 WHERE id = ?1 AND stock >= ?2 RETURNING book_id",
        )
        .bind(offer_id)
        .bind(quantity)
        .fetch_optional(&mut *conn)
        .await?;
        match claimed {
            Some((book_id,)) => book_ids.push(book_id),
            None => {
                let available: Option<(i32,)> =
                    sqlx::query_as("SELECT stock FROM offers WHERE id = ?1")
                        .bind(offer_id)
                        .fetch_optional(&mut *conn)
                        .await?;
                return Ok(match available {
                    None => Claim::OfferMissing(offer_id),
                    Some((available,)) => Claim::NotEnoughStock {
                        offer_id,
                        available,
                    },
                });
            }
        }
    }
    book_ids.sort_unstable();
    book_ids.dedup();
    Ok(Claim::Claimed { book_ids })
}
