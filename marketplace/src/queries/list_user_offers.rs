//! `GET /users/{id}/offers`: a page of a seller's offers, newest first,
//! sold-out ones included, each with the stock it has left.

use bus_core::{Query, QueryError, QueryHandler};
use uuid::Uuid;

use super::Queries;
use crate::model::{ListPosition, SellerOffer, Slice};

/// Up to `limit` offers of a seller, newest first (creation time, then id,
/// both descending), from the one after `after` in that order when given.
#[derive(Debug, Clone, Copy)]
pub struct ListUserOffers {
    /// The seller.
    pub seller_id: Uuid,
    /// The position of the previous page's last offer.
    pub after: Option<ListPosition>,
    /// Offers per page.
    pub limit: u32,
}

impl Query for ListUserOffers {
    type Output = Slice<SellerOffer>;
}

impl QueryHandler<ListUserOffers> for Queries {
    /// One offer more than the page tells whether another page follows, so
    /// the last page announces none.
    async fn handle(&self, query: ListUserOffers) -> Result<Slice<SellerOffer>, QueryError> {
        let offers = self
            .reads
            .offers
            .list_seller_offers(query.seller_id, query.after, query.limit.saturating_add(1))
            .await?;
        Ok(Slice::of_overfetched(offers, query.limit))
    }
}
