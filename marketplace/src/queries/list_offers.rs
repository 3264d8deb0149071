//! `GET /offers/{bookId}`: a book's sellers, cheapest first.

use bus_core::{Query, QueryError, QueryHandler};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Queries;

/// One seller's offer of a book.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Offer {
    /// Offer id.
    pub id: Uuid,
    /// The book.
    pub book_id: Uuid,
    /// The seller.
    pub seller_id: Uuid,
    /// The seller's name, when the seller is known.
    pub seller_name: Option<String>,
    /// Price of one copy.
    #[serde(with = "rust_decimal::serde::float")]
    #[schema(value_type = f64)]
    pub price: Decimal,
    /// Copies left.
    pub stock: i32,
}

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
