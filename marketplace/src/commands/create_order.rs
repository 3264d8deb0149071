//! `POST /order`: a user buys copies from chosen offers, all or nothing.

use std::sync::Arc;

use bus_core::{Command, CommandHandler, HandlerError, Message, MessageContext};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;
use validator::Validate;

use crate::{
    commands::id_conflict,
    events::StockClaimed,
    model::{count_from_json_number, IdConflict, NewOrder, OrderOutcome},
    store::OrderRepository,
};

/// Buy the listed items for user `user_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateOrder {
    /// Client-generated id of the order.
    pub id: Uuid,
    /// The buyer.
    pub user_id: Uuid,
    /// 1 to 50 items; items naming the same offer are added up.
    #[validate(length(min = 1, max = 50), nested)]
    #[schema(min_items = 1, max_items = 50)]
    pub items: Vec<OrderItem>,
}

/// Copies bought from one offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Validate, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderItem {
    /// The offer bought from.
    pub offer_id: Uuid,
    /// Copies, 1 to 1000000 (an integral float such as `3.0` is an
    /// integer).
    #[serde(deserialize_with = "count_from_json_number")]
    #[validate(range(min = 1, max = 1_000_000))]
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: i64,
}

impl Message for CreateOrder {
    const NAME: &'static str = "marketplace.CreateOrder";
}
impl Command for CreateOrder {}

/// Claims the stock of every item atomically, or none of it.
///
/// Exactly-once effect on at-least-once delivery: the repository records the
/// order first; a redelivered command finds it `confirmed` or `rejected`
/// and changes nothing, so stock is never claimed twice. On the durable bus
/// the settled order also commits the command's receipt, so the command is
/// not run again at all. The same id with
/// another payload is refused as a permanent [`IdConflict`], even while the
/// order is `pending`: its items are never replaced. Stock is claimed
/// with conditional updates (`stock >= quantity`), in offer-id order, all or
/// nothing (see `store/orders.rs`); the model settles the outcome and what
/// the buyer is charged.
///
/// A buyer, or an item's offer, that does not exist yet keeps the order
/// `pending` and asks for a retry (commands travel on different queues, so
/// they may still be on their way), as an offer waits for its seller; on the
/// last attempt the order is `rejected` with the reason instead.
#[derive(Clone)]
pub struct CreateOrderHandler {
    orders: Arc<dyn OrderRepository>,
}

impl CreateOrderHandler {
    /// A handler writing to `orders`.
    pub fn new(orders: Arc<dyn OrderRepository>) -> Self {
        Self { orders }
    }
}

impl CommandHandler<CreateOrder> for CreateOrderHandler {
    async fn handle(
        &self,
        order: CreateOrder,
        context: MessageContext,
    ) -> Result<(), HandlerError> {
        let new_order = NewOrder::new(
            order.id,
            order.user_id,
            order
                .items
                .iter()
                .map(|item| (item.offer_id, item.quantity)),
            context.is_last_attempt(),
        )
        .map_err(|error| HandlerError::permanent(error.to_string()))?;
        let confirmed = |book_ids: Vec<Uuid>| {
            context.event_envelope(&StockClaimed {
                order_id: order.id,
                book_ids,
            })
        };
        let applied = self
            .orders
            .apply_order(&new_order, &confirmed, context.durable_receipt())
            .await?;
        match applied {
            OrderOutcome::AlreadyApplied => {
                tracing::debug!(order_id = %order.id, "order already applied");
                Ok(())
            }
            OrderOutcome::Confirmed | OrderOutcome::Rejected { .. } => Ok(()),
            OrderOutcome::IdConflict { stored } => Err(id_conflict(IdConflict {
                kind: "order",
                id: order.id,
                stored,
                received: new_order.fingerprint(),
            })),
            OrderOutcome::OfferMissing(offer_id) => Err(HandlerError::retryable(format!(
                "offer {offer_id} does not exist (yet)"
            ))),
            OrderOutcome::BuyerMissing(user_id) => Err(HandlerError::retryable(format!(
                "buyer {user_id} does not exist (yet)"
            ))),
        }
    }
}
