//! Users, books and offers: the catalogue as clients read it.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// A user.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// User id.
    pub id: Uuid,
    /// Display name.
    pub name: String,
}

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

/// An offer to put on sale, as the store writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOffer {
    /// Client-generated offer id.
    pub id: Uuid,
    /// The book on sale.
    pub book_id: Uuid,
    /// The selling user.
    pub seller_id: Uuid,
    /// Price of one copy, in cents (see [`crate::model::round_price`]).
    pub price: Decimal,
    /// Copies on sale.
    pub stock: i32,
}

/// What creating an offer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferOutcome {
    /// The offer was inserted and its event staged.
    Created,
    /// An offer with this id and this payload exists already: nothing
    /// changed.
    AlreadyExists,
    /// An offer with this id exists with another payload: nothing changed.
    IdConflict {
        /// Fingerprint of the stored offer's payload.
        stored: String,
    },
    /// The book is not registered (yet).
    BookMissing,
    /// The seller is not registered (yet).
    SellerMissing,
}

/// Where a save of a user or a book stands in the order the API accepted
/// saves: the last write wins by this order, not by the order consumers
/// happen to apply them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Revision {
    /// When the API accepted the save (its envelope's timestamp).
    pub accepted_at: DateTime<Utc>,
    /// The save's envelope id: orders saves accepted at the same instant.
    pub envelope_id: Uuid,
}
