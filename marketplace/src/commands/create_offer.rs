//! `POST /offer`: a user puts copies of a book on sale.

use std::sync::Arc;

use bus_core::{Command, CommandHandler, HandlerError, Message, MessageContext};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use validator::{Validate, ValidationError};

use crate::{
    events::OfferCreated,
    store::{OfferOutcome, OfferRepository},
};

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
#[derive(Clone)]
pub struct CreateOfferHandler {
    offers: Arc<dyn OfferRepository>,
}

impl CreateOfferHandler {
    /// A handler writing to `offers`.
    pub fn new(offers: Arc<dyn OfferRepository>) -> Self {
        Self { offers }
    }
}

impl CommandHandler<CreateOffer> for CreateOfferHandler {
    async fn handle(
        &self,
        offer: CreateOffer,
        context: MessageContext,
    ) -> Result<(), HandlerError> {
        let event = OfferCreated {
            offer_id: offer.id,
            book_id: offer.book_id,
        };
        let envelope = context
            .event_envelope(&event)
            .map_err(|e| HandlerError::permanent(e.to_string()))?;
        match self.offers.create_offer(&offer, &envelope).await? {
            OfferOutcome::Created | OfferOutcome::AlreadyExists => Ok(()),
            OfferOutcome::BookMissing => Err(HandlerError::retryable(format!(
                "book {} does not exist (yet)",
                offer.book_id
            ))),
            OfferOutcome::SellerMissing => Err(HandlerError::retryable(format!(
                "seller {} does not exist (yet)",
                offer.seller_id
            ))),
        }
    }
}
