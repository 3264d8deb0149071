//! `GET /offers/{bookId}`: a page of a book's sellers, cheapest first.

use bus_core::{Query, QueryError, QueryHandler};
use uuid::Uuid;

use super::Queries;
use crate::model::Offer;

/// Up to `limit` offers of a book, cheapest first (ties by offer id), from
/// the one after offer `after` in that order when given.
#[derive(Debug, Clone, Copy)]
pub struct ListOffers {
    /// The book.
    pub book_id: Uuid,
    /// The last offer of the previous page.
    pub after: Option<Uuid>,
    /// Offers per page.
    pub limit: u32,
}

/// A page of offers.
#[derive(Debug, Clone, PartialEq)]
pub struct OffersPage {
    /// The offers, cheapest first.
    pub offers: Vec<Offer>,
    /// Whether offers follow this page (the next page starts after its
    /// last offer).
    pub more: bool,
}

impl Query for ListOffers {
    type Output = OffersPage;
}

impl QueryHandler<ListOffers> for Queries {
    /// One row more than the page tells whether another page follows, so
    /// the last page announces none.
    async fn handle(&self, query: ListOffers) -> Result<OffersPage, QueryError> {
        let mut offers = self
            .reads
            .offers
            .list_offers(query.book_id, query.after, query.limit.saturating_add(1))
            .await?;
        let more = offers.len() > query.limit as usize;
        offers.truncate(query.limit as usize);
        Ok(OffersPage { offers, more })
    }
}
