//! `GET /users/{id}/orders`: a page of a buyer's orders, newest first,
//! each with its items and what it cost.

use bus_core::{Query, QueryError, QueryHandler};
use uuid::Uuid;

use super::Queries;
use crate::model::{ListPosition, Order, Slice};

/// Up to `limit` orders of a buyer, newest first (creation time, then id,
/// both descending), from the one after `after` in that order when given.
#[derive(Debug, Clone, Copy)]
pub struct ListUserOrders {
    /// The buyer.
    pub user_id: Uuid,
    /// The position of the previous page's last order.
    pub after: Option<ListPosition>,
    /// Orders per page.
    pub limit: u32,
}

impl Query for ListUserOrders {
    type Output = Slice<Order>;
}

impl QueryHandler<ListUserOrders> for Queries {
    /// One order more than the page tells whether another page follows, so
    /// the last page announces none.
    async fn handle(&self, query: ListUserOrders) -> Result<Slice<Order>, QueryError> {
        let orders = self
            .reads
            .orders
            .list_user_orders(query.user_id, query.after, query.limit.saturating_add(1))
            .await?;
        Ok(Slice::of_overfetched(orders, query.limit))
    }
}
