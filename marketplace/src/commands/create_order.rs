//! `POST /order`: a user buys copies from chosen offers, all or nothing.

use std::collections::BTreeMap;

use bus_core::{outbox, Command, CommandHandler, HandlerError, Message, MessageContext};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;
use validator::Validate;

use crate::events::StockClaimed;

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
    /// Copies, at least 1.
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
/// Exactly-once effect on at-least-once delivery: the order row is inserted
/// first and locked; a redelivered command finds it `confirmed` or
/// `rejected` and changes nothing, so stock is never claimed twice. Stock is
/// claimed with conditional updates (`stock >= quantity`), in offer-id order
/// (no deadlock between orders), inside a savepoint that is rolled back as a
/// whole if any item lacks stock.
///
/// An item whose offer does not exist yet keeps the order `pending` and asks
/// for a retry (the offer may still be on its way); on the last attempt the
/// order is `rejected` instead.
#[derive(Debug, Clone)]
pub struct CreateOrderHandler {
    pool: PgPool,
}

impl CreateOrderHandler {
    /// A handler writing to `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// What happened when claiming an order's stock.
enum Claim {
    Claimed { book_ids: Vec<Uuid> },
    OfferMissing(Uuid),
    NotEnoughStock { offer_id: Uuid, available: i32 },
}

impl CommandHandler<CreateOrder> for CreateOrderHandler {
    async fn handle(
        &self,
        order: CreateOrder,
        context: MessageContext,
    ) -> Result<(), HandlerError> {
        let mut quantities: BTreeMap<Uuid, i64> = BTreeMap::new();
        for item in &order.items {
            *quantities.entry(item.offer_id).or_default() += item.quantity;
        }
        let quantities: Vec<(Uuid, i32)> = quantities
            .into_iter()
            .map(|(offer_id, quantity)| {
                i32::try_from(quantity)
                    .map(|quantity| (offer_id, quantity))
                    .map_err(|_| {
                        HandlerError::permanent(format!("quantity {quantity} out of range"))
                    })
            })
            .collect::<Result<_, _>>()?;

        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO orders (id, user_id, status) VALUES ($1, $2, 'pending') ON CONFLICT (id) DO NOTHING")
            .bind(order.id)
            .bind(order.user_id)
            .execute(&mut *tx)
            .await?;
        let (status,): (String,) =
            sqlx::query_as("SELECT status FROM orders WHERE id = $1 FOR UPDATE")
                .bind(order.id)
                .fetch_one(&mut *tx)
                .await?;
        if status != "pending" {
            tracing::debug!(order_id = %order.id, %status, "order already applied");
            return Ok(());
        }

        let mut claims = sqlx::Connection::begin(&mut *tx).await?;
        let claim = claim_stock(&mut claims, &quantities).await?;
        let (status, reason) = match claim {
            Claim::Claimed { book_ids } => {
                claims.commit().await?;
                let event = StockClaimed {
                    order_id: order.id,
                    book_ids,
                };
                let envelope = context
                    .event_envelope(&event)
                    .map_err(|e| HandlerError::permanent(e.to_string()))?;
                outbox::stage(&mut tx, &envelope).await?;
                ("confirmed", None)
            }
            Claim::OfferMissing(offer_id) if !context.is_last_attempt() => {
                claims.rollback().await?;
                // Keep the order visible as `pending` while we wait.
                tx.commit().await?;
                return Err(HandlerError::retryable(format!(
                    "offer {offer_id} does not exist (yet)"
                )));
            }
            Claim::OfferMissing(offer_id) => {
                claims.rollback().await?;
                ("rejected", Some(format!("offer {offer_id} does not exist")))
            }
            Claim::NotEnoughStock {
                offer_id,
                available,
            } => {
                claims.rollback().await?;
                (
                    "rejected",
                    Some(format!("offer {offer_id} has {available} copies left")),
                )
            }
        };

        let (offer_ids, amounts): (Vec<Uuid>, Vec<i32>) = quantities.into_iter().unzip();
        sqlx::query(
            "INSERT INTO order_items (order_id, offer_id, quantity)
             SELECT $1, * FROM UNNEST($2::uuid[], $3::int[])
             ON CONFLICT DO NOTHING",
        )
        .bind(order.id)
        .bind(&offer_ids)
        .bind(&amounts)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE orders SET status = $2, reason = $3, updated_at = now() WHERE id = $1")
            .bind(order.id)
            .bind(status)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Claims each quantity in offer-id order; stops at the first item that
/// cannot be served. The caller rolls back on anything but `Claimed`.
async fn claim_stock(
    conn: &mut PgConnection,
    quantities: &[(Uuid, i32)],
) -> Result<Claim, sqlx::Error> {
    let mut book_ids = Vec::with_capacity(quantities.len());
    for &(offer_id, quantity) in quantities {
        let claimed: Option<(Uuid,)> = sqlx::query_as(
            "UPDATE offers SET stock = stock - $2 WHERE id = $1 AND stock >= $2 RETURNING book_id",
        )
        .bind(offer_id)
        .bind(quantity)
        .fetch_optional(&mut *conn)
        .await?;
        match claimed {
            Some((book_id,)) => book_ids.push(book_id),
            None => {
                let available: Option<(i32,)> =
                    sqlx::query_as("SELECT stock FROM offers WHERE id = $1")
                        .bind(offer_id)
                        .fetch_optional(&mut *conn)
                        .await?;
                return Ok(match available {
                    None => Claim::OfferMissing(offer_id),
                    Some((available,)) => Claim::NotEnoughStock {
                        offer_id,
                        available,
                    },
                });
            }
        }
    }
    book_ids.sort_unstable();
    book_ids.dedup();
    Ok(Claim::Claimed { book_ids })
}
