//! `GET /orders/{id}`: an order, its items and where it stands.

use bus_core::{Query, QueryError, QueryHandler};
use chrono::{DateTime, Utc};
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
