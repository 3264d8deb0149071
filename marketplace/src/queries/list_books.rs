//! `GET /books`: a page of the catalogue.

use bus_core::{Query, QueryError, QueryHandler};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Queries;

/// A book with its cheapest in-stock offer (`stock` 0, `price` 0.0 and
/// `offerId` null when there is none).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Book {
    /// Book id.
    pub id: Uuid,
    /// Title.
    pub title: String,
    /// Author.
    pub author: String,
    /// Copies left in the cheapest in-stock offer.
    pub stock: i32,
    /// Price of the cheapest in-stock offer.
    #[serde(with = "rust_decimal::serde::float")]
    #[schema(value_type = f64)]
    pub price: Decimal,
    /// The cheapest in-stock offer.
    pub offer_id: Option<Uuid>,
}

/// Page `page` (from 1) of `page_size` books, in registration order.
#[derive(Debug, Clone, Copy)]
pub struct ListBooks {
    /// Page number, from 1.
    pub page: u32,
    /// Books per page.
    pub page_size: u32,
}

impl Query for ListBooks {
    type Output = Vec<Book>;
}

impl QueryHandler<ListBooks> for Queries {
    async fn handle(&self, query: ListBooks) -> Result<Vec<Book>, QueryError> {
        Ok(self.store.books.list_books(query).await?)
    }
}
