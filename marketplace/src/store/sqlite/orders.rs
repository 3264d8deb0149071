//! Orders on SQLite: the statements of [`crate::store::orders`], and
//! reading orders back: one, or a page of a buyer's. Prices and totals are
//! cents.

use async_trait::async_trait;
use bus_core::{durable::sqlite::record_receipts, outbox, Envelope, Receipt};
use rust_decimal::Decimal;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{from_cents, read_time, stored_time, to_cents, SqliteStore, NOW};
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

impl OrderRow {
    /// The order, without its items.
    fn into_order(self) -> Result<Order, StoreError> {
        Ok(Order {
            id: self.id,
            user_id: self.user_id,
            status: self.status.parse()?,
            reason: self.reason,
            items: Vec::new(),
            total: from_cents(self.total_cents),
            created_at: read_time(&self.created_at)?,
        })
    }
}

impl LineRow {
    /// The line, prices in decimal.
    fn into_line(self) -> OrderLine {
        OrderLine {
            offer_id: self.offer_id,
            quantity: self.quantity,
            unit_price: self.unit_price_cents.map(from_cents),
            total: self.total_cents.map(from_cents),
        }
    }
}

/// A page of buyer `?1`'s orders, newest first, `?2` at most, with their
/// items: `$after` narrows the orders to those after a position of the
/// list. The page is one range of `orders_by_user` (`user_id`,
/// `created_at`, `id`), read backwards; its items are joined to it in the
/// same statement, one row per item (an order without items on one row
/// with null item columns), an order's rows together in offer-id order.
macro_rules! user_orders_sql {
    ($after:literal) => {
        concat!(
            "WITH page AS (
                 SELECT id, user_id, status, reason, total_cents, created_at FROM orders
                 WHERE user_id = ?1 ",
            $after,
            "
                 ORDER BY created_at DESC, id DESC
                 LIMIT ?2)
             SELECT p.id, p.user_id, p.status, p.reason, p.total_cents, p.created_at,
                    i.offer_id, i.quantity, i.unit_price_cents, i.total_cents AS item_total_cents
             FROM page p LEFT JOIN order_items i ON i.order_id = p.id
             ORDER BY p.created_at DESC, p.id DESC, i.offer_id"
        )
    };
}

/// The first page of buyer `?1`'s orders (at most `?2`), newest first.
const LIST_USER_ORDERS_SQL: &str = user_orders_sql!("");

/// The next page: the orders after the position (`?3` created at, as
/// stored, `?4` id) of the previous page's last one.
const LIST_USER_ORDERS_AFTER_SQL: &str = user_orders_sql!("AND (created_at, id) < (?3, ?4)");

/// One row of [`LIST_USER_ORDERS_SQL`]: an order, and one of its items if
/// it has any.
#[derive(sqlx::FromRow)]
struct ListedOrderRow {
    #[sqlx(flatten)]
    order: OrderRow,
    offer_id: Option<Uuid>,
    quantity: Option<i32>,
    unit_price_cents: Option<i64>,
    item_total_cents: Option<i64>,
}

#[async_trait]
impl OrderRepository for SqliteStore {
    async fn apply_order(
        &self,
        order: &NewOrder,
        confirmed: ConfirmedEvent<'_>,
        receipt: Option<Receipt>,
    ) -> Result<OrderOutcome, StoreError> {
        orders::apply_order(&self.writer, order, confirmed, receipt).await
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
        Ok(Some(Order {
            items: items.into_iter().map(LineRow::into_line).collect(),
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
                    .fetch_all(&self.reader)
                    .await?
            }
            Some(after) => {
                sqlx::query_as(LIST_USER_ORDERS_AFTER_SQL)
                    .bind(user_id)
                    .bind(limit)
                    .bind(stored_time(after.created_at))
                    .bind(after.id)
                    .fetch_all(&self.reader)
                    .await?
            }
        };
        let rows = rows
            .into_iter()
            .map(|row| {
                let line = match (row.offer_id, row.quantity) {
                    (Some(offer_id), Some(quantity)) => Some(
                        LineRow {
                            offer_id,
                            quantity,
                            unit_price_cents: row.unit_price_cents,
                            total_cents: row.item_total_cents,
                        }
                        .into_line(),
                    ),
                    _ => None,
                };
                Ok((row.order.into_order()?, line))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(gather_orders(rows))
    }
}

/// The single writing connection serialises orders, so no row lock is
/// needed.
#[async_trait]
impl OrderStatements for SqliteConnection {
    async fn open_order(
        &mut self,
        order: &NewOrder,
        fingerprint: &str,
    ) -> Result<(OrderStatus, Option<String>), StoreError> {
        sqlx::query(
            "INSERT INTO orders (id, user_id, status, fingerprint)
             VALUES (?1, ?2, 'pending', ?3)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(order.id)
        .bind(order.user_id)
        .bind(fingerprint)
        .execute(&mut *self)
        .await?;
        let (status, stored): (String, Option<String>) =
            sqlx::query_as("SELECT status, fingerprint FROM orders WHERE id = ?1")
                .bind(order.id)
                .fetch_one(&mut *self)
                .await?;
        Ok((status.parse()?, stored))
    }

    async fn user_exists(&mut self, user_id: Uuid) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = ?1)")
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
        let claimed: Option<(Uuid, i64)> = sqlx::query_as(
            "UPDATE offers SET stock = stock - ?2 WHERE id = ?1 AND stock >= ?2
             RETURNING book_id, price_cents",
        )
        .bind(offer_id)
        .bind(quantity)
        .fetch_optional(&mut *self)
        .await?;
        Ok(claimed.map(|(book_id, price_cents)| (book_id, from_cents(price_cents))))
    }

    async fn stock_left(&mut self, offer_id: Uuid) -> Result<Option<i32>, StoreError> {
        Ok(sqlx::query_scalar("SELECT stock FROM offers WHERE id = ?1")
            .bind(offer_id)
            .fetch_optional(&mut *self)
            .await?)
    }

    async fn stage(&mut self, event: &Envelope) -> Result<(), StoreError> {
        outbox::sqlite::stage(self, event).await?;
        Ok(())
    }

    async fn record_receipt(&mut self, receipt: Option<Receipt>) -> Result<(), StoreError> {
        record_receipts(self, receipt).await?;
        Ok(())
    }

    async fn record(&mut self, order_id: Uuid, settlement: &Settlement) -> Result<(), StoreError> {
        for line in &settlement.lines {
            sqlx::query(
                "INSERT INTO order_items (order_id, offer_id, quantity, unit_price_cents, total_cents)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT DO NOTHING",
            )
            .bind(order_id)
            .bind(line.offer_id)
            .bind(line.quantity)
            .bind(line.unit_price.map(to_cents).transpose()?)
            .bind(line.total.map(to_cents).transpose()?)
            .execute(&mut *self)
            .await?;
        }
        sqlx::query(&format!(
            "UPDATE orders SET status = ?2, reason = ?3, total_cents = ?4, updated_at = {NOW}
             WHERE id = ?1"
        ))
        .bind(order_id)
        .bind(settlement.outcome.status().as_str())
        .bind(settlement.outcome.reason())
        .bind(to_cents(settlement.total)?)
        .execute(&mut *self)
        .await?;
        Ok(())
    }
}
