//! Orders on SQLite: the statements of [`crate::store::orders`], and
//! reading an order back. Prices and totals are cents.

use async_trait::async_trait;
use bus_core::{durable::sqlite::record_receipts, outbox, Envelope, Receipt};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{from_cents, to_cents, SqliteStore, NOW};
use crate::{
    model::{NewOrder, Order, OrderLine, OrderOutcome, OrderStatus, Settlement},
    store::{
        orders::{self, OrderStatements},
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
        let created_at = DateTime::parse_from_rfc3339(&row.created_at)
            .map_err(|error| {
                StoreError::Invalid(format!("created_at {:?}: {error}", row.created_at))
            })?
            .with_timezone(&Utc);
        Ok(Some(Order {
            id: row.id,
            user_id: row.user_id,
            status: row.status.parse()?,
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
