//! `GET /offers/{bookId}`: a book's sellers, cheapest first.

use bus_core::{Query, QueryError, QueryHandler};
use uuid::Uuid;

use super::Queries;
use crate::model::Offer;

/// Every offer of book `0`, cheapest first (ties by offer id).
#[derive(Debug, Clone, Copy)]
pub struct ListOffers(pub Uuid);

impl Query for ListOffers {
    type Output = Vec<Offer>;
}

impl QueryHandler<ListOffers> for Queries {
    async fn handle(&self, ListOffers(book_id): ListOffers) -> Result<Vec<Offer>, QueryError> {
        Ok(self.store.offers.list_offers(book_id).await?)
    }
}
