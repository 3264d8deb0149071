//! Storage: the marketplace's repository traits, and one sqlx implementation
//! per database.
//!
//! Handlers and queries only see the traits below; which database sits
//! behind them is chosen once, at start-up, from `DATABASE_URL`:
//!
//! | URL | implementation | for |
//! |---|---|---|
//! | `sqlite://marketplace.db` (the default) | [`sqlite`]: an embedded file, one writer | a laptop, demos: nothing to install |
//! | `postgres://…` | [`postgres`]: a connection pool, row locks | production, several processes, RabbitMQ |
//!
//! Every SQL statement of the marketplace lives in `postgres/` or `sqlite/`,
//! one file per aggregate (users, books, offers, orders); the schemas are in
//! `migrations/postgres/` and `migrations/sqlite/`. Both implementations
//! keep the same promises, which the HTTP test suite checks on each: writes
//! are idempotent by client id, stock is claimed all-or-nothing and never
//! below zero, and events are staged in the transaction of the change that
//! raised them (transactional outbox).

pub mod postgres;
pub mod sqlite;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bus_core::{outbox::OutboxStore, Envelope, HandlerError, QueryError};
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    commands::{CreateOffer, SaveBook, SaveUser},
    queries::{Book, ListBooks, Offer, Order, User},
};

pub use self::sqlite::SqliteStore;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored value cannot be represented (e.g. a malformed timestamp).
    #[error("invalid stored value: {0}")]
    Invalid(String),
    /// The event to stage could not be encoded.
    #[error("cannot encode event: {0}")]
    Encode(#[from] bus_core::EncodeError),
}

impl From<StoreError> for HandlerError {
    /// Database errors are transient (a retry after a failover or a busy
    /// database usually succeeds); the others are not.
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Database(error) => error.into(),
            other => HandlerError::permanent(other.to_string()),
        }
    }
}

impl From<StoreError> for QueryError {
    fn from(error: StoreError) -> Self {
        QueryError::Failed(Box::new(error))
    }
}

/// What [`OfferRepository::create_offer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferOutcome {
    /// The offer was inserted and its event staged.
    Created,
    /// An offer with this id exists already: nothing changed.
    AlreadyExists,
    /// The book is not registered (yet).
    BookMissing,
    /// The seller is not registered (yet).
    SellerMissing,
}

/// An order to apply: quantities per offer, summed and sorted by offer id.
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// Client-generated order id.
    pub id: Uuid,
    /// The buyer.
    pub user_id: Uuid,
    /// `(offer id, copies)`, one entry per offer, in offer-id order.
    pub quantities: Vec<(Uuid, i32)>,
    /// Reject the order if an offer is missing (last attempt) instead of
    /// keeping it `pending`.
    pub reject_missing_offers: bool,
}

/// Builds the event staged when an order is confirmed, from the books whose
/// offers lost stock.
pub type ConfirmedEvent<'a> =
    &'a (dyn Fn(Vec<Uuid>) -> Result<Envelope, bus_core::EncodeError> + Send + Sync);

/// What [`OrderRepository::apply_order`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderOutcome {
    /// The order was applied before (redelivery): nothing changed.
    AlreadyApplied,
    /// Stock was claimed for every item; the order is `confirmed`.
    Confirmed,
    /// The order is `rejected` for `reason`; no stock was claimed.
    Rejected {
        /// Why, for the client.
        reason: String,
    },
    /// An offer does not exist (yet): the order stays `pending`.
    OfferMissing(Uuid),
}

/// An item whose stock was claimed, at its offer's price at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimedLine {
    /// The offer that lost stock.
    pub(crate) offer_id: Uuid,
    /// Its book.
    pub(crate) book_id: Uuid,
    /// Copies claimed.
    pub(crate) quantity: i32,
    /// The offer's price when the stock was claimed.
    pub(crate) unit_price: Decimal,
}

/// What claiming an order's stock found, in either database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Every item was served, in this order.
    Claimed(Vec<ClaimedLine>),
    /// This offer does not exist (yet).
    OfferMissing(Uuid),
    /// This offer has fewer copies than asked.
    NotEnoughStock { offer_id: Uuid, available: i32 },
}

/// One line as a settled order records it: the price and line total are
/// known only when its stock was claimed (never on a rejected order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SettledLine {
    pub(crate) offer_id: Uuid,
    pub(crate) quantity: i32,
    pub(crate) unit_price: Option<Decimal>,
    pub(crate) total: Option<Decimal>,
}

/// What applying an order decided: its outcome, what it records, and the
/// books whose offers lost stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settlement {
    pub(crate) outcome: OrderOutcome,
    /// The lines to record (none while the order stays `pending`).
    pub(crate) lines: Vec<SettledLine>,
    /// What the buyer was charged: the sum of the line totals, 0 unless
    /// confirmed.
    pub(crate) total: Decimal,
    /// Books whose offers lost stock, sorted, without duplicates.
    pub(crate) book_ids: Vec<Uuid>,
}

impl Claim {
    /// The order's outcome (the business rule, the same on every database):
    /// confirmed with each line priced as claimed, or rejected with nothing
    /// charged, or still pending.
    pub(crate) fn settle(self, order: &NewOrder) -> Settlement {
        let unpriced = || {
            order
                .quantities
                .iter()
                .map(|&(offer_id, quantity)| SettledLine {
                    offer_id,
                    quantity,
                    unit_price: None,
                    total: None,
                })
                .collect()
        };
        let rejected = |reason: String| Settlement {
            outcome: OrderOutcome::Rejected { reason },
            lines: unpriced(),
            total: Decimal::ZERO,
            book_ids: Vec::new(),
        };
        match self {
            Claim::Claimed(claimed) => {
                let lines: Vec<SettledLine> = claimed
                    .iter()
                    .map(|line| SettledLine {
                        offer_id: line.offer_id,
                        quantity: line.quantity,
                        unit_price: Some(line.unit_price),
                        total: Some(line.unit_price * Decimal::from(line.quantity)),
                    })
                    .collect();
                let total = lines.iter().filter_map(|line| line.total).sum();
                let mut book_ids: Vec<Uuid> = claimed.iter().map(|line| line.book_id).collect();
                book_ids.sort_unstable();
                book_ids.dedup();
                Settlement {
                    outcome: OrderOutcome::Confirmed,
                    lines,
                    total,
                    book_ids,
                }
            }
            Claim::OfferMissing(offer_id) if !order.reject_missing_offers => Settlement {
                outcome: OrderOutcome::OfferMissing(offer_id),
                lines: Vec::new(),
                total: Decimal::ZERO,
                book_ids: Vec::new(),
            },
            Claim::OfferMissing(offer_id) => rejected(format!("offer {offer_id} does not exist")),
            Claim::NotEnoughStock {
                offer_id,
                available,
            } => rejected(format!("offer {offer_id} has {available} copies left")),
        }
    }
}

impl OrderOutcome {
    /// The `status` and `reason` columns of a settled order.
    pub(crate) fn status_and_reason(&self) -> (&'static str, Option<&str>) {
        match self {
            OrderOutcome::Rejected { reason } => ("rejected", Some(reason.as_str())),
            OrderOutcome::OfferMissing(_) => ("pending", None),
            OrderOutcome::AlreadyApplied | OrderOutcome::Confirmed => ("confirmed", None),
        }
    }
}

/// Users.
#[async_trait]
pub trait UserRepository: Send + Sync {
    /// Creates the user or renames it (idempotent).
    async fn save_user(&self, user: &SaveUser) -> Result<(), StoreError>;
    /// The user `id`.
    async fn get_user(&self, id: Uuid) -> Result<Option<User>, StoreError>;
}

/// Books and their cheapest in-stock offer.
#[async_trait]
pub trait BookRepository: Send + Sync {
    /// Creates the book or edits its title and author (idempotent); never
    /// touches its cheapest-offer columns.
    async fn save_book(&self, book: &SaveBook) -> Result<(), StoreError>;
    /// The book `id`.
    async fn get_book(&self, id: Uuid) -> Result<Option<Book>, StoreError>;
    /// A page of the catalogue, in registration order.
    async fn list_books(&self, page: ListBooks) -> Result<Vec<Book>, StoreError>;
    /// Recomputes the book's cheapest in-stock offer from its offers
    /// (idempotent, insensitive to event order).
    async fn refresh_cheapest_offer(&self, book_id: Uuid) -> Result<(), StoreError>;
}

/// Offers.
#[async_trait]
pub trait OfferRepository: Send + Sync {
    /// Inserts the offer if its book and seller exist, staging `event` in
    /// the same transaction when it is new.
    async fn create_offer(
        &self,
        offer: &CreateOffer,
        event: &Envelope,
    ) -> Result<OfferOutcome, StoreError>;
    /// Every offer of a book, cheapest first (ties by offer id).
    async fn list_offers(&self, book_id: Uuid) -> Result<Vec<Offer>, StoreError>;
}

/// Orders.
#[async_trait]
pub trait OrderRepository: Send + Sync {
    /// Applies the order once: claims the stock of every item or none,
    /// records the outcome and, when confirmed, stages the event built by
    /// `confirmed` in the same transaction.
    async fn apply_order(
        &self,
        order: &NewOrder,
        confirmed: ConfirmedEvent<'_>,
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

/// The database the marketplace runs on, connected and migrated.
#[derive(Debug, Clone)]
pub enum Database {
    /// PostgreSQL.
    Postgres(PgPool),
    /// An embedded SQLite file.
    Sqlite(SqliteStore),
}

/// How long a readiness probe waits for the database.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the RabbitMQ bus refuses SQLite.
pub const RABBITMQ_NEEDS_POSTGRES: &str = "the RabbitMQ bus needs PostgreSQL: \
API and workers are separate processes sharing one database, and SQLite is a file for one process; \
set DATABASE_URL=postgres://... (or use --bus in-memory-async)";

impl Database {
    /// Connects to `url` and applies the migrations: `postgres://` or
    /// `postgresql://` for PostgreSQL (the database is created if missing),
    /// `sqlite:` for an SQLite file (created if missing). At most
    /// `max_connections` connections (readers, on SQLite).
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(
                postgres::connect(url, max_connections).await?,
            ))
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(SqliteStore::open(url, max_connections).await?))
        } else {
            anyhow::bail!(
                "DATABASE_URL must start with postgres://, postgresql:// or sqlite: (got {:?})",
                redact(url)
            )
        }
    }

    /// The PostgreSQL pool, or the error that explains why the RabbitMQ bus
    /// cannot run on this database.
    pub fn require_postgres(&self) -> anyhow::Result<&PgPool> {
        self.postgres()
            .ok_or_else(|| anyhow::anyhow!(RABBITMQ_NEEDS_POSTGRES))
    }

    /// Every repository on this database.
    pub fn repositories(&self) -> Repositories {
        match self {
            Self::Postgres(pool) => {
                let store = postgres::PgStore::new(pool.clone());
                Repositories {
                    users: Arc::new(store.clone()),
                    books: Arc::new(store.clone()),
                    offers: Arc::new(store.clone()),
                    orders: Arc::new(store),
                }
            }
            Self::Sqlite(store) => Repositories {
                users: Arc::new(store.clone()),
                books: Arc::new(store.clone()),
                offers: Arc::new(store.clone()),
                orders: Arc::new(store.clone()),
            },
        }
    }

    /// The outbox the command handlers stage their events in.
    pub fn outbox(&self) -> Box<dyn OutboxStore> {
        match self {
            Self::Postgres(pool) => Box::new(pool.clone()),
            Self::Sqlite(store) => Box::new(store.writer().clone()),
        }
    }

    /// The PostgreSQL pool, if this is PostgreSQL.
    pub fn postgres(&self) -> Option<&PgPool> {
        match self {
            Self::Postgres(pool) => Some(pool),
            Self::Sqlite(_) => None,
        }
    }

    /// Checks that the database answers, for `/health/ready`.
    pub async fn ping(&self) -> Result<(), String> {
        let query = async {
            match self {
                Self::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
                Self::Sqlite(store) => sqlx::query("SELECT 1")
                    .execute(store.reader())
                    .await
                    .map(drop),
            }
        };
        match tokio::time::timeout(PING_TIMEOUT, query).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!("database: {error}")),
            Err(_) => Err("database: no answer in time".to_owned()),
        }
    }

    /// `"PostgreSQL"` or `"SQLite"`, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "PostgreSQL",
            Self::Sqlite(_) => "SQLite",
        }
    }

    /// Closes every connection.
    pub async fn close(&self) {
        match self {
            Self::Postgres(pool) => pool.close().await,
            Self::Sqlite(store) => store.close().await,
        }
    }
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
