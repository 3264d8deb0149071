//! `POST /offer`: a user puts copies of a book on sale.

use std::sync::Arc;

use bus_core::{
    BatchHandler, BatchOutcome, Command, CommandHandler, Envelope, HandlerError, Message,
    MessageContext,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use validator::{Validate, ValidationError};

use crate::{
    commands::id_conflict,
    events::OfferCreated,
    model::{
        count_from_json_number, price_error, price_from_json_number, IdConflict, NewOffer,
        OfferOutcome,
    },
    store::OfferRepository,
};

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
    /// Price of one copy: any JSON number from 0.005 to below
    /// 1000000000.005, rounded half away from zero to cents (so 0.01 to
    /// 1000000000.00 are stored); the rounded price is what reads answer.
    #[serde(
        serialize_with = "rust_decimal::serde::float::serialize",
        deserialize_with = "price_from_json_number"
    )]
    #[validate(custom(function = "validate_price"))]
    #[schema(value_type = f64, minimum = 0.005, exclusive_maximum = 1000000000.005, example = 45.31927383)]
    pub price: Decimal,
    /// Copies on sale, 1 to 1000000 (an integral float such as `3.0` is an
    /// integer).
    #[serde(deserialize_with = "count_from_json_number")]
    #[validate(range(min = 1, max = 1_000_000))]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub stock: i64,
}

fn validate_price(price: &Decimal) -> Result<(), ValidationError> {
    match price_error(*price) {
        Some(message) => Err(ValidationError::new("range").with_message(message.into())),
        None => Ok(()),
    }
}

impl Message for CreateOffer {
    const NAME: &'static str = "marketplace.CreateOffer";
}
impl Command for CreateOffer {}

/// Inserts the offer once its book and seller exist, and raises
/// [`OfferCreated`] in the same transaction (outbox), with the durable
/// bus's receipt of the command when the offer is there.
///
/// An offer id reused with another payload is refused as a permanent
/// [`IdConflict`], leaving the first offer as it was.
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

impl CreateOfferHandler {
    /// The row to insert and the event to stage for `offer`, or why it can
    /// never be inserted.
    fn prepare(
        offer: &CreateOffer,
        context: &MessageContext,
    ) -> Result<(NewOffer, Envelope), HandlerError> {
        let event = OfferCreated {
            offer_id: offer.id,
            book_id: offer.book_id,
        };
        let envelope = context
            .event_envelope(&event)
            .map_err(|e| HandlerError::permanent(e.to_string()))?;
        let stock = i32::try_from(offer.stock)
            .map_err(|_| HandlerError::permanent(format!("stock {} out of range", offer.stock)))?;
        let new_offer = NewOffer {
            id: offer.id,
            book_id: offer.book_id,
            seller_id: offer.seller_id,
            price: offer.price,
            stock,
        };
        Ok((new_offer, envelope))
    }

    /// The handler's result for what the store did with `new_offer`.
    fn result(new_offer: &NewOffer, outcome: OfferOutcome) -> Result<(), HandlerError> {
        match outcome {
            OfferOutcome::Created | OfferOutcome::AlreadyExists => Ok(()),
            OfferOutcome::IdConflict { stored } => Err(id_conflict(IdConflict {
                kind: "offer",
                id: new_offer.id,
                stored,
                received: new_offer.fingerprint(),
            })),
            OfferOutcome::BookMissing => Err(HandlerError::retryable(format!(
                "book {} does not exist (yet)",
                new_offer.book_id
            ))),
            OfferOutcome::SellerMissing => Err(HandlerError::retryable(format!(
                "seller {} does not exist (yet)",
                new_offer.seller_id
            ))),
        }
    }
}

impl CommandHandler<CreateOffer> for CreateOfferHandler {
    async fn handle(
        &self,
        offer: CreateOffer,
        context: MessageContext,
    ) -> Result<(), HandlerError> {
        let (new_offer, envelope) = Self::prepare(&offer, &context)?;
        let outcome = self
            .offers
            .create_offer(&new_offer, &envelope, context.durable_receipt())
            .await?;
        Self::result(&new_offer, outcome)
    }
}

/// A batch of offers in one transaction: one multi-row insert with the
/// outbox rows of the new ones, and the receipts of the offers done. Each offer keeps its own outcome (a missing
/// book retried, a reused id dead-lettered) while the others are applied.
impl BatchHandler<CreateOffer> for CreateOfferHandler {
    async fn handle_batch(&self, batch: &[(CreateOffer, MessageContext)]) -> BatchOutcome {
        let mut results = Vec::with_capacity(batch.len());
        let mut rows = Vec::with_capacity(batch.len());
        let mut row_of = Vec::with_capacity(batch.len());
        for (index, (offer, context)) in batch.iter().enumerate() {
            match Self::prepare(offer, context) {
                Ok((new_offer, envelope)) => {
                    rows.push((new_offer, envelope, context.durable_receipt()));
                    row_of.push(index);
                    results.push(Ok(()));
                }
                Err(error) => results.push(Err(error)),
            }
        }
        if !rows.is_empty() {
            let outcomes = self.offers.create_offers(&rows).await?;
            for ((index, (new_offer, _, _)), outcome) in row_of.into_iter().zip(&rows).zip(outcomes)
            {
                results[index] = Self::result(new_offer, outcome);
            }
        }
        Ok(results)
    }
}
