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

/// One of a seller's offers as `GET /users/{id}/offers` lists it: the
/// offer's fields, with the book's title and when the offer was put on
/// sale. A sold-out offer is listed too, with `stock` 0.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SellerOffer {
    /// Offer id.
    pub id: Uuid,
    /// The book.
    pub book_id: Uuid,
    /// The book's title (`null` if the book cannot be found).
    pub title: Option<String>,
    /// The seller.
    pub seller_id: Uuid,
    /// The seller's name, when the seller is known.
    pub seller_name: Option<String>,
    /// Price of one copy.
    #[serde(with = "rust_decimal::serde::float")]
    #[schema(value_type = f64, example = 12.5)]
    pub price: Decimal,
    /// Copies left (0 once sold out).
    pub stock: i32,
    /// When the offer was put on sale.
    pub created_at: DateTime<Utc>,
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

impl OfferOutcome {
    /// Whether the command is done: the offer is there (created now or
    /// before). A missing book or seller is retried, a conflict
    /// dead-lettered.
    pub fn is_done(&self) -> bool {
        matches!(self, Self::Created | Self::AlreadyExists)
    }
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

/// Who registered a book, as its row says: `None` for a book registered
/// while authentication was off (or by the seed), which nobody owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookRegistration {
    /// The signed-in user whose save created the book.
    pub registered_by: Option<Uuid>,
}

/// A save of a book by a user who did not register it: refused, whether
/// the API sees it or, when two users race to register the same new id,
/// the handler does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "not-the-owner: book {book} was registered by another user (or while authentication was off); only the user who registered it may edit it"
)]
pub struct NotTheOwner {
    /// The book.
    pub book: Uuid,
}

/// Whether `editor` may save book `book`, whose registration is `stored`
/// (`None`: not registered yet).
///
/// - No editor (authentication off, or a save accepted before it was on):
///   no check, as in the original API.
/// - A book not registered yet: any signed-in user registers it, and owns
///   it from then on.
/// - A registered book: only the user who registered it edits it; a book
///   registered while authentication was off has no owner, so nobody does.
pub fn may_save_book(
    book: Uuid,
    stored: Option<BookRegistration>,
    editor: Option<Uuid>,
) -> Result<(), NotTheOwner> {
    match (editor, stored) {
        (None, _) | (Some(_), None) => Ok(()),
        (Some(editor), Some(BookRegistration { registered_by }))
            if registered_by == Some(editor) =>
        {
            Ok(())
        }
        (Some(_), Some(_)) => Err(NotTheOwner { book }),
    }
}

/// What a save of a book did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookSaveOutcome {
    /// Registered, edited, or left as it was because it holds a later save.
    Applied,
    /// Refused: the editor does not own the book; nothing changed.
    Refused(NotTheOwner),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_user_who_registered_a_book_edits_it() {
        let (book, ann, bob) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let owned_by_ann = Some(BookRegistration {
            registered_by: Some(ann),
        });
        let unowned = Some(BookRegistration {
            registered_by: None,
        });
        assert_eq!(may_save_book(book, None, Some(bob)), Ok(()));
        assert_eq!(may_save_book(book, owned_by_ann, Some(ann)), Ok(()));
        assert_eq!(
            may_save_book(book, owned_by_ann, Some(bob)),
            Err(NotTheOwner { book })
        );
        assert_eq!(
            may_save_book(book, unowned, Some(ann)),
            Err(NotTheOwner { book })
        );
        // Authentication off: no check at all.
        assert_eq!(may_save_book(book, owned_by_ann, None), Ok(()));
    }
}
