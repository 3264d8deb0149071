//! `POST /offer`: a user puts copies of a book on sale.

use bus_core::{outbox, Command, CommandHandler, HandlerError, Message, MessageContext};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;
use validator::{Validate, ValidationError};

use crate::events::OfferCreated;

/// Highest accepted price (the column is `NUMERIC(12,2)`).
const MAX_PRICE: Decimal = Decimal::from_parts(999_999_999, 0, 0, false, 0);

/// Sell `stock` copies of book `book_id` at `price`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateOffer {
    /// Client-generated id of the offer.
    pub id: Uuid,
    /// The book on sale; it may be registered after the offer is sent.
    pub book_id: Uuid,
    /// The selling user; it may be registered after the offer is sent.
    pub seller_id: Uuid,
    /// Price of one copy: greater than 0, at most 2 decimals.
    #[serde(
        serialize_with = "rust_decimal::serde::float::serialize",
        deserialize_with = "price_from_json_number"
    )]
    #[validate(custom(function = "validate_price"))]
    #[schema(value_type = f64, exclusive_minimum = 0, example = 12.5)]
    pub price: Decimal,
    /// Copies on sale, at least 1.
    #[validate(range(min = 1, max = 1_000_000))]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub stock: i64,
}

/// Accepts a JSON number only (a string is a wrong type: `400`), converted
/// to the shortest decimal that round-trips, so `19.99` stays `19.99`.
fn price_from_json_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Decimal, D::Error> {
    use rust_decimal::prelude::FromPrimitive;
    let value = <f64 as Deserialize>::deserialize(deserializer)?;
    Decimal::from_f64(value).ok_or_else(|| serde::de::Error::custom("price out of range"))
}

fn validate_price(price: &Decimal) -> Result<(), ValidationError> {
    if *price <= Decimal::ZERO {
        return Err(ValidationError::new("range").with_message("must be greater than 0".into()));
    }
    if *price > MAX_PRICE {
        return Err(ValidationError::new("range").with_message("must be at most 999999999".into()));
    }
    if price.normalize().scale() > 2 {
        return Err(
            ValidationError::new("scale").with_message("must have at most 2 decimals".into())
        );
    }
    Ok(())
}

impl Message for CreateOffer {
    const NAME: &'static str = "marketplace.CreateOffer";
}
impl Command for CreateOffer {}

/// Inserts the offer once its book and seller exist, and raises
/// [`OfferCreated`] in the same transaction (outbox).
///
/// A missing book or seller is a retryable error: commands travel on
/// different queues, so the offer may simply have overtaken them. Async buses
/// retry it with backoff and dead-letter it if they never appear; the sync
/// bus answers `409`.
#[derive(Debug, Clone)]
pub struct CreateOfferHandler {
    pool: PgPool,
}

impl CreateOfferHandler {
    /// A handler writing to `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl CommandHandler<CreateOffer> for CreateOfferHandler {
    async fn handle(
        &self,
        offer: CreateOffer,
        context: MessageContext,
    ) -> Result<(), HandlerError> {
        let mut tx = self.pool.begin().await?;
        let (book_exists, seller_exists): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM books WHERE id = $1),
                    EXISTS (SELECT 1 FROM users WHERE id = $2)",
        )
        .bind(offer.book_id)
        .bind(offer.seller_id)
        .fetch_one(&mut *tx)
        .await?;
        if !book_exists {
            return Err(HandlerError::retryable(format!(
                "book {} does not exist (yet)",
                offer.book_id
            )));
        }
        if !seller_exists {
            return Err(HandlerError::retryable(format!(
                "seller {} does not exist (yet)",
                offer.seller_id
            )));
        }
        let stock = i32::try_from(offer.stock)
            .map_err(|_| HandlerError::permanent(format!("stock {} out of range", offer.stock)))?;
        let inserted = sqlx::query(
            "INSERT INTO offers (id, book_id, seller_id, price, stock) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(offer.id)
        .bind(offer.book_id)
        .bind(offer.seller_id)
        .bind(offer.price)
        .bind(stock)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            let event = OfferCreated {
                offer_id: offer.id,
                book_id: offer.book_id,
            };
            let envelope = context
                .event_envelope(&event)
                .map_err(|e| HandlerError::permanent(e.to_string()))?;
            outbox::stage(&mut tx, &envelope).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
