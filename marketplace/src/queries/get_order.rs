//! `GET /orders/{id}`: an order, its items and where it stands.

use bus_core::{Query, QueryError, QueryHandler};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Queries;

/// An order and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// Order id.
    pub id: Uuid,
    /// The buyer.
    pub user_id: Uuid,
    /// `pending`, `confirmed` or `rejected`.
    #[schema(example = "confirmed")]
    pub status: String,
    /// Why the order was rejected.
    pub reason: Option<String>,
    /// What was ordered (empty while `pending`).
    pub items: Vec<OrderLine>,
    /// What the buyer was charged: the sum of the items' totals when
    /// `confirmed`; 0 while `pending` and when `rejected` (nothing charged).
    #[serde(with = "rust_decimal::serde::float")]
    #[schema(value_type = f64, example = 90.64)]
    pub total: Decimal,
    /// When the order was first applied.
    pub created_at: DateTime<Utc>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    /// The offer bought from.
    pub offer_id: Uuid,
    /// Copies.
    pub quantity: i32,
    /// The offer's price of one copy when the stock was claimed; `null` on
    /// a rejected order (no stock was claimed).
    #[serde(with = "rust_decimal::serde::float_option")]
    #[schema(value_type = Option<f64>, example = 45.32)]
    pub unit_price: Option<Decimal>,
    /// `unitPrice × quantity`; `null` on a rejected order.
    #[serde(with = "rust_decimal::serde::float_option")]
    #[schema(value_type = Option<f64>, example = 90.64)]
    pub total: Option<Decimal>,
}

/// The order `0`, if it exists.
#[derive(Debug, Clone, Copy)]
pub struct GetOrder(pub Uuid);

impl Query for GetOrder {
    type Output = Option<Order>;
}

impl QueryHandler<GetOrder> for Queries {
    async fn handle(&self, GetOrder(id): GetOrder) -> Result<Option<Order>, QueryError> {
        Ok(self.store.orders.get_order(id).await?)
    }
}
