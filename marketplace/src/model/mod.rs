//! The marketplace's model: the read models clients see, the outcomes of
//! the commands, and the business rules that are not SQL (how prices are
//! rounded, how an order's quantities add up, what a stock claim decides
//! and what the buyer is charged, which text is a name, when a reused id
//! is a conflict, who may edit a book, what a search looks for).
//!
//! Everything else sits above this module: the store persists these types,
//! commands and queries speak them, the HTTP edge serializes them. It
//! imports nothing from the rest of the crate.

mod catalogue;
mod fingerprint;
mod listing;
mod numbers;
mod order;
mod text;

pub use catalogue::{
    may_save_book, Book, BookRegistration, BookSaveOutcome, NewOffer, NotTheOwner, Offer,
    OfferOutcome, Revision, User,
};
pub use fingerprint::{conflicts, IdConflict};
pub use listing::{BookKey, SearchError, SearchTerms, MAX_SEARCH_CHARS, MAX_SEARCH_WORDS};
pub use numbers::{
    count_from_json_number, price_error, price_from_json_number, round_price, MAX_PRICE,
    MAX_PRICE_SENT, MIN_PRICE_SENT,
};
pub(crate) use order::{Claim, ClaimedLine, Settlement};
pub use order::{
    NewOrder, Order, OrderLine, OrderOutcome, OrderStatus, QuantityOutOfRange, UnknownStatus,
};
pub use text::{text_error, trimmed};
