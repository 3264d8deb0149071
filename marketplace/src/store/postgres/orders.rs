//! Orders on PostgreSQL: the statements of [`crate::store::orders`], and
//! reading orders back: one, or a page of a buyer's.

use async_trait::async_trait;
use bus_core::{durable::postgres::record_receipts, outbox, Envelope, Receipt};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::PgStore;
use crate::{
    model::{ListPosition, NewOrder, Order, OrderLine, OrderOutcome, OrderStatus, Settlement},
    store::{
        orders::{self, gather_orders, OrderStatements},
        ConfirmedEvent, OrderRepository, StoreError,
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

/// A page of buyer `$1`'s orders, newest first, `$2` at most, with their
/// items: `$after` narrows the orders to those after a position of the
/// list. The page is one range of `orders_by_user` (`user_id`,
/// `created_at`, `id`), read backwards; its items are joined to it in the
/// same statement, one row per item (an order without items on one row
/// with null item columns), an order's rows together in offer-id order.
macro_rules! user_orders_sql {
    ($after:literal) => {
        concat!(
            "WITH page AS (
                 SELECT id, user_id, status, reason, total, created_at FROM orders
                 WHERE user_id = $1 ",
            $after,
            "
                 ORDER BY created_at DESC, id DESC
                 LIMIT $2)
             SELECT p.id, p.user_id, p.status, p.reason, p.total, p.created_at,
                    i.offer_id, i.quantity, i.unit_price, i.total AS item_total
             FROM page p LEFT JOIN order_items i ON i.order_id = p.id
             ORDER BY p.created_at DESC, p.id DESC, i.offer_id"
        )
    };
}

/// `GET /users/{id}/orders`: the first page of buyer `$1`'s orders (at
/// most `$2`), newest first, with their items.
const LIST_USER_ORDERS_SQL: &str = user_orders_sql!("");

/// The next page: the orders after the position (`$3` created at, `$4`
/// id) of the previous page's last one, in the same order.
const LIST_USER_ORDERS_AFTER_SQL: &str = user_orders_sql!("AND (created_at, id) < ($3, $4)");

/// One row of [`LIST_USER_ORDERS_SQL`]: an order, and one of its items if
/// it has any.
#[derive(sqlx::FromRow)]
struct ListedOrderRow {
    #[sqlx(flatten)]
    order: OrderRow,
    offer_id: Option<Uuid>,
    quantity: Option<i32>,
    unit_price: Option<Decimal>,
    item_total: Option<Decimal>,
}

impl OrderRow {
    /// The order, without its items.
    fn into_order(self) -> Result<Order, StoreError> {
        Ok(Order {
            id: self.id,
            user_id: self.user_id,
            status: self.status.parse()?,
            reason: self.reason,
            items: Vec::new(),
            total: self.total,
            created_at: self.created_at,
        })
    }
}

#[async_trait]
impl OrderRepository for PgStore {
    async fn apply_order(
        &self,
        order: &NewOrder,
        confirmed: ConfirmedEvent<'_>,
        receipt: Option<Receipt>,
    ) -> Result<OrderOutcome, StoreError> {
        orders::apply_order(&self.pool, order, confirmed, receipt).await
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
            items,
            ..row.into_order()?
        }))
    }

    async fn list_user_orders(
        &self,
        user_id: Uuid,
        after: Option<ListPosition>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let limit = i64::from(limit);
        let rows: Vec<ListedOrderRow> = match after {
            None => {
                sqlx::query_as(LIST_USER_ORDERS_SQL)
                    .bind(user_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
            Some(after) => {
                sqlx::query_as(LIST_USER_ORDERS_AFTER_SQL)
                    .bind(user_id)
                    .bind(limit)
                    .bind(after.created_at)
                    .bind(after.id)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        let rows = rows
            .into_iter()
            .map(|row| {
                let line = match (row.offer_id, row.quantity) {
                    (Some(offer_id), Some(quantity)) => Some(OrderLine {
                        offer_id,
                        quantity,
                        unit_price: row.unit_price,
                        total: row.item_total,
                    }),
                    _ => None,
                };
                Ok((row.order.into_order()?, line))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(gather_orders(rows))
    }
}

/// The order row is locked (`FOR UPDATE`): concurrent deliveries of one
/// order wait for each other, and the second finds it settled.
#[async_trait]
impl OrderStatements for PgConnection {
    async fn open_order(
        &mut self,
        order: &NewOrder,
        fingerprint: &str,
    ) -> Result<(OrderStatus, Option<String>), StoreError> {
        sqlx::query(
            "INSERT INTO orders (id, user_id, status, fingerprint)
             VALUES ($1, $2, 'pending', $3)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(order.id)
        .bind(order.user_id)
        .bind(fingerprint)
        .execute(&mut *self)
        .await?;
        let (status, stored): (String, Option<String>) =
            sqlx::query_as("SELECT status, fingerprint FROM orders WHERE id = $1 FOR UPDATE")
                .bind(order.id)
                .fetch_one(&mut *self)
                .await?;
        Ok((status.parse()?, stored))
    }

    async fn user_exists(&mut self, user_id: Uuid) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
                .bind(user_id)
                .fetch_one(&mut *self)
                .await?,
        )
    }

    async fn take_stock(
        &mut self,
        offer_id: Uuid,
        quantity: i32,
    ) -> Result<Option<(Uuid, Decimal)>, StoreError> {
        Ok(sqlx::query_as(
            "UPDATE offers SET stock = stock - $2 WHERE id = $1 AND stock >= $2
             RETURNING book_id, price",
        )
        .bind(offer_id)
        .bind(quantity)
        .fetch_optional(&mut *self)
        .await?)
    }

    async fn stock_left(&mut self, offer_id: Uuid) -> Result<Option<i32>, StoreError> {
        Ok(sqlx::query_scalar("SELECT stock FROM offers WHERE id = $1")
            .bind(offer_id)
            .fetch_optional(&mut *self)
            .await?)
    }

    async fn stage(&mut self, event: &Envelope) -> Result<(), StoreError> {
        outbox::postgres::stage(self, event).await?;
        Ok(())
    }

    async fn record_receipt(&mut self, receipt: Option<Receipt>) -> Result<(), StoreError> {
        record_receipts(self, receipt).await?;
        Ok(())
    }

    async fn record(&mut self, order_id: Uuid, settlement: &Settlement) -> Result<(), StoreError> {
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
        .bind(order_id)
        .bind(&offer_ids)
        .bind(&quantities)
        .bind(&unit_prices)
        .bind(&totals)
        .execute(&mut *self)
        .await?;
        sqlx::query(
            "UPDATE orders SET status = $2, reason = $3, total = $4, updated_at = now()
             WHERE id = $1",
        )
        .bind(order_id)
        .bind(settlement.outcome.status().as_str())
        .bind(settlement.outcome.reason())
        .bind(settlement.total)
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}
