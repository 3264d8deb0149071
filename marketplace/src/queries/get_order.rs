//! `GET /orders/{id}`: an order, its items and where it stands.

use bus_core::{Query, QueryError, QueryHandler};
use uuid::Uuid;

use super::Queries;
use crate::model::Order;

/// The order `0`, if it exists.
#[derive(Debug, Clone, Copy)]
pub struct GetOrder(pub Uuid);

impl Query for GetOrder {
    type Output = Option<Order>;
}

impl QueryHandler<GetOrder> for Queries {
    async fn handle(&self, GetOrder(id): GetOrder) -> Result<Option<Order>, QueryError> {
        Ok(self.primary.orders.get_order(id).await?)
    }
}
