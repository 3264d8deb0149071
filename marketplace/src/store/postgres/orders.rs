//! Orders on PostgreSQL: stock claimed atomically, exactly once.

use async_trait::async_trait;
use bus_core::outbox;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::PgStore;
use crate::{
    queries::Order,
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
    total: Decimal,
    created_at: DateTime<Utc>,
}

/// Exactly-once effect on at-least-once delivery: the order row is inserted
/// first and locked; a redelivered command finds it `confirmed` or
/// `rejected` and changes nothing, so stock is never claimed twice. Stock is
/// claimed with conditional updates (`stock >= quantity`), in offer-id order
/// (no deadlock between orders), inside a savepoint that is rolled back as a
/// whole if any item lacks stock.
#[async_trait]
impl OrderRepository for PgStore {
    async fn apply_order(
        &self,
        order: &NewOrder,
        confirmed: ConfirmedEvent<'_>,
    ) -> Result<OrderOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO orders (id, user_id, status) VALUES ($1, $2, 'pending')
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(order.id)
        .bind(order.user_id)
        .execute(&mut *tx)
        .await?;
        let (status,): (String,) =
            sqlx::query_as("SELECT status FROM orders WHERE id = $1 FOR UPDATE")
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
                outbox::postgres::stage(&mut tx, &confirmed(settlement.book_ids.clone())?).await?;
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

        let lines = &settlement.lines;
        let offer_ids: Vec<Uuid> = lines.iter().map(|line| line.offer_id).collect();
        let quantities: Vec<i32> = lines.iter().map(|line| line.quantity).collect();
        let unit_prices: Vec<Option<Decimal>> = lines.iter().map(|line| line.unit_price).collect();
        let totals: Vec<Option<Decimal>> = lines.iter().map(|line| line.total).collect();
        sqlx::query(
            "INSERT INTO order_items (order_id, offer_id, quantity, unit_price, total)
             SELECT $1, * FROM UNNEST($2::uuid[], $3::int[], $4::numeric[], $5::numeric[])
             ON CONFLICT DO NOTHING",
        )
        .bind(order.id)
        .bind(&offer_ids)
        .bind(&quantities)
        .bind(&unit_prices)
        .bind(&totals)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE orders SET status = $2, reason = $3, total = $4, updated_at = now()
             WHERE id = $1",
        )
        .bind(order.id)
        .bind(status)
        .bind(reason)
        .bind(settlement.total)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(settlement.outcome)
    }

    async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError> {
        let order: Option<OrderRow> = sqlx::query_as(
            "SELECT id, user_id, status, reason, total, created_at FROM orders WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = order else {
            return Ok(None);
        };
        let items = sqlx::query_as(
            "SELECT offer_id, quantity, unit_price, total FROM order_items
             WHERE order_id = $1 ORDER BY offer_id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(Order {
            id: row.id,
            user_id: row.user_id,
            status: row.status,
            reason: row.reason,
            items,
            total: row.total,
            created_at: row.created_at,
        }))
    }
}

/// Claims each quantity in offer-id order; stops at the first item that
/// cannot be served. The caller rolls back on anything but `Claimed`.
async fn claim_stock(
    conn: &mut PgConnection,
    quantities: &[(Uuid, i32)],
) -> Result<Claim, sqlx::Error> {
    let mut lines = Vec::with_capacity(quantities.len());
    for &(offer_id, quantity) in quantities {
        let claimed: Option<(Uuid, Decimal)> = sqlx::query_as(
            "UPDATE offers SET stock = stock - $2 WHERE id = $1 AND stock >= $2
             RETURNING book_id, price",
        )
        .bind(offer_id)
        .bind(quantity)
        .fetch_optional(&mut *conn)
        .await?;
        match claimed {
            Some((book_id, unit_price)) => lines.push(ClaimedLine {
                offer_id,
                book_id,
                quantity,
                unit_price,
            }),
            None => {
                let available: Option<(i32,)> =
                    sqlx::query_as("SELECT stock FROM offers WHERE id = $1")
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
