//! The repository traits handlers and queries see, whatever the database.
//!
//! The write methods take the durable bus's receipts of the messages they
//! apply ([`bus_core::MessageContext::durable_receipt`]) and record them in
//! the transaction of the effect, for the messages whose effect it commits
//! (not those refused or to retry): the effect and the acknowledgement
//! commit together (exactly-once effect). Without receipts (the other
//! buses) nothing is recorded.

use std::sync::Arc;

use async_trait::async_trait;
use bus_core::{Envelope, Receipt};
use uuid::Uuid;

use super::error::StoreError;
use crate::model::{
    Book, BookKey, BookRegistration, BookSaveOutcome, NewOffer, NewOrder, Offer, OfferOutcome,
    Order, OrderOutcome, Revision, SearchTerms, User,
};

/// Builds the event staged when an order is confirmed, from the books whose
/// offers lost stock.
pub type ConfirmedEvent<'a> =
    &'a (dyn Fn(Vec<Uuid>) -> Result<Envelope, bus_core::EncodeError> + Send + Sync);

/// One save of a book, for [`BookRepository::save_books`].
#[derive(Debug, Clone)]
pub struct BookSave {
    /// The book.
    pub id: Uuid,
    /// Its title.
    pub title: String,
    /// Its author.
    pub author: String,
    /// The signed-in user who sent the save, if any.
    pub editor: Option<Uuid>,
    /// The save's place in the order the API accepted saves.
    pub revision: Revision,
    /// The durable bus's receipt of the message, recorded in the save's
    /// transaction when it is applied (not when it is refused).
    pub receipt: Option<Receipt>,
}

impl BookSave {
    /// The receipts of the saves of `saves` applied, by their `outcomes`
    /// (a refused save is dead-lettered: its message is not done).
    pub(crate) fn applied_receipts<'a>(
        saves: &'a [BookSave],
        outcomes: &'a [BookSaveOutcome],
    ) -> impl Iterator<Item = Receipt> + 'a {
        saves
            .iter()
            .zip(outcomes)
            .filter(|(_, outcome)| **outcome == BookSaveOutcome::Applied)
            .filter_map(|(save, _)| save.receipt)
    }
}

/// Users.
#[async_trait]
pub trait UserRepository: Send + Sync {
    /// Creates the user or renames it, unless it holds a later save than
    /// `revision` (idempotent; the last save accepted wins), recording
    /// `receipt` with it.
    async fn save_user(
        &self,
        user: &User,
        revision: &Revision,
        receipt: Option<Receipt>,
    ) -> Result<(), StoreError>;
    /// Saves every `(user, revision)` in order, as [`save_user`] does, in
    /// one transaction with `receipts`: all or none.
    ///
    /// [`save_user`]: UserRepository::save_user
    async fn save_users(
        &self,
        users: &[(User, Revision)],
        receipts: &[Receipt],
    ) -> Result<(), StoreError>;
    /// The user `id`.
    async fn get_user(&self, id: Uuid) -> Result<Option<User>, StoreError>;
}

/// Books and their cheapest in-stock offer.
#[async_trait]
pub trait BookRepository: Send + Sync {
    /// Creates the book or edits its title and author, unless it holds a
    /// later save than `revision` (idempotent; the last save accepted
    /// wins); never touches its cheapest-offer columns.
    ///
    /// With an `editor` (a signed-in user), the book's owner is checked in
    /// the same transaction ([`crate::model::may_save_book`]): a new book
    /// is registered by `editor`, and a book someone else registered is
    /// left as it was and the save `Refused`. `receipt` is recorded with a
    /// save applied.
    async fn save_book(
        &self,
        id: Uuid,
        title: &str,
        author: &str,
        editor: Option<Uuid>,
        revision: &Revision,
        receipt: Option<Receipt>,
    ) -> Result<BookSaveOutcome, StoreError>;
    /// Saves every book of `saves` in order, as [`save_book`] does, in one
    /// transaction: all or none; one outcome per save (a refused save
    /// changes nothing, the others are applied with their receipts).
    ///
    /// [`save_book`]: BookRepository::save_book
    async fn save_books(&self, saves: &[BookSave]) -> Result<Vec<BookSaveOutcome>, StoreError>;
    /// Who registered the book `id`, if it exists.
    async fn book_registration(&self, id: Uuid) -> Result<Option<BookRegistration>, StoreError>;
    /// The book `id`.
    async fn get_book(&self, id: Uuid) -> Result<Option<Book>, StoreError>;
    /// Up to `limit` books after skipping `offset`, in registration order,
    /// or, with `search`, the books matching it, best match first (ties by
    /// id).
    async fn list_books(
        &self,
        offset: u64,
        limit: u32,
        search: Option<&SearchTerms>,
    ) -> Result<Vec<Book>, StoreError>;
    /// Up to `limit` books with their keys, in the same order as
    /// [`list_books`], starting after the book of key `after` in that
    /// order (from the first book without it). A key of the other order
    /// (a search's key without `search`, or the reverse) is
    /// [`StoreError::Invalid`].
    ///
    /// [`list_books`]: BookRepository::list_books
    async fn list_books_after(
        &self,
        after: Option<&BookKey>,
        limit: u32,
        search: Option<&SearchTerms>,
    ) -> Result<Vec<(Book, BookKey)>, StoreError>;
    /// Recomputes the cheapest in-stock offer of each book of `book_ids`
    /// from its offers (idempotent, insensitive to event order), in one
    /// transaction with `receipts`.
    async fn refresh_cheapest_offers(
        &self,
        book_ids: &[Uuid],
        receipts: &[Receipt],
    ) -> Result<(), StoreError>;
}

/// Offers.
#[async_trait]
pub trait OfferRepository: Send + Sync {
    /// Inserts the offer if its book and seller exist, staging `event` in
    /// the same transaction when it is new; records `receipt` when the offer
    /// is there (created now or before), not when it waits for its book or
    /// seller or its id is taken.
    async fn create_offer(
        &self,
        offer: &NewOffer,
        event: &Envelope,
        receipt: Option<Receipt>,
    ) -> Result<OfferOutcome, StoreError>;
    /// Inserts every `(offer, event, receipt)` as [`create_offer`] does, in
    /// one transaction: all or none; one outcome per offer, in order.
    ///
    /// [`create_offer`]: OfferRepository::create_offer
    async fn create_offers(
        &self,
        offers: &[(NewOffer, Envelope, Option<Receipt>)],
    ) -> Result<Vec<OfferOutcome>, StoreError>;
    /// Up to `limit` offers of a book, cheapest first (ties by offer id),
    /// from the one after offer `after` in that order when given (none if
    /// `after` is not an offer of this book).
    async fn list_offers(
        &self,
        book_id: Uuid,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<Offer>, StoreError>;
}

/// Orders.
#[async_trait]
pub trait OrderRepository: Send + Sync {
    /// Applies the order once: claims the stock of every item or none,
    /// records the outcome and what was charged and, when confirmed, stages
    /// the event built by `confirmed` in the same transaction, with
    /// `receipt` once the order is settled (confirmed, rejected, or found
    /// settled before).
    async fn apply_order(
        &self,
        order: &NewOrder,
        confirmed: ConfirmedEvent<'_>,
        receipt: Option<Receipt>,
    ) -> Result<OrderOutcome, StoreError>;
    /// The order `id` with its items.
    async fn get_order(&self, id: Uuid) -> Result<Option<Order>, StoreError>;
}

/// One handle per repository, shared by handlers and queries.
#[derive(Clone)]
pub struct Repositories {
    /// Users.
    pub users: Arc<dyn UserRepository>,
    /// Books.
    pub books: Arc<dyn BookRepository>,
    /// Offers.
    pub offers: Arc<dyn OfferRepository>,
    /// Orders.
    pub orders: Arc<dyn OrderRepository>,
}
