//! Orders on SQLite: stock claimed atomically, exactly once.

use async_trait::async_trait;
use bus_core::outbox;
use chrono::{DateTime, Utc};
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{from_cents, to_cents, SqliteStore, NOW};
use crate::{
    queries::{Order, OrderLine},
    store::{
        Claim, ClaimedLine, ConfirmedEvent, NewOrder, OrderOutcome, OrderRepository, StoreError,
    },
};

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    user_id: Uuid,
    status: String,
    reason: Option<String>,
    total_cents: i64,
    created_at: String,
}

#[derive(sqlx::FromRow)]
struct LineRow {
    offer_id: Uuid,
    quantity: i32,
    unit_price_cents: Option<i64>,
    total_cents: Option<i64>,
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
        let settlement = claim.settle(order);
        match settlement.outcome {
            OrderOutcome::Confirmed => {
                claims.commit().await?;
                outbox::sqlite::stage(&mut tx, &confirmed(settlement.book_ids.clone())?).await?;
            }
            OrderOutcome::OfferMissing(_) => {
                claims.rollback().await?;
                // Keep the order visible as `pending` while we wait.
                tx.commit().await?;
                return Ok(settlement.outcome);
            }
            _ => claims.rollback().await?,
        }
        let (status, reason) = settlement.outcome.status_and_reason();
        for line in &settlement.lines {
            sqlx::query(
                "INSERT INTO order_items (order_id, offer_id, quantity, unit_price_cents, total_cents)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
            )
            .bind(order.id)
            .bind(line.offer_id)
            .bind(line.quantity)
            .bind(line.unit_price.map(to_cents).transpose()?)
            .bind(line.total.map(to_cents).transpose()?)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(&format!(
            "UPDATE orders SET status = ?2, reason = ?3, total_cents = ?4, updated_at = {NOW}
             WHERE id = ?1"
        ))
        .bind(order.id)
        .bind(status)
        .bind(reason)
        .bind(to_cents(settlement.total)?)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(settlement.outcome)
    }

    async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let order: Option<OrderRow> = sqlx::query_as(
            "SELECT id, user_id, status, reason, total_cents, created_at FROM orders WHERE id = ?1",
        )
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        let Some(row) = order else {
            return Ok(None);
        };
        let items: Vec<LineRow> = sqlx::query_as(
            "SELECT offer_id, quantity, unit_price_cents, total_cents FROM order_items
             WHERE order_id = ?1 ORDER BY offer_id",
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
            items: items
                .into_iter()
                .map(|line| OrderLine {
                    offer_id: line.offer_id,
                    quantity: line.quantity,
                    unit_price: line.unit_price_cents.map(from_cents),
                    total: line.total_cents.map(from_cents),
                })
                .collect(),
            total: from_cents(row.total_cents),
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
    let mut lines = Vec::with_capacity(quantities.len());
    for &(offer_id, quantity) in quantities {
        let claimed: Option<(Uuid, i64)> = sqlx::query_as(
            "UPDATE offers SET stock = stock - ?2 WHERE id = ?1 AND stock >= ?2
             RETURNING book_id, price_cents",
        )
        .bind(offer_id)
        .bind(quantity)
        .fetch_optional(&mut *conn)
        .await?;
        match claimed {
            Some((book_id, price_cents)) => lines.push(ClaimedLine {
                offer_id,
                book_id,
                quantity,
                unit_price: from_cents(price_cents),
            }),
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
    Ok(Claim::Claimed(lines))
}
