//! Applying an order, written once for both databases: only the statements
//! differ, behind [`OrderStatements`].
//!
//! Exactly-once effect on at-least-once delivery: the order row is inserted
//! first with the fingerprint of its payload (and locked, where the database
//! has row locks); a redelivered command finds it `confirmed` or `rejected`
//! and changes nothing, so stock is never claimed twice, and a command
//! reusing its id with another payload is refused as a conflict, even while
//! the order is `pending`. Stock is claimed with conditional updates
//! (`stock >= quantity`), in offer-id order (no deadlock between orders),
//! inside a savepoint rolled back as a whole if any item cannot be served.
//! What that decides, and what the buyer is charged, is the model's
//! [`Claim::settle`].
//!
//! Listing a buyer's orders reads a page of orders joined with their items
//! in one statement, one row per item; [`gather_orders`] folds those rows
//! back into orders, on either database.

use async_trait::async_trait;
use bus_core::{Envelope, Receipt};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::{error::StoreError, repositories::ConfirmedEvent};
use crate::model::{
    conflicts, Claim, ClaimedLine, NewOrder, Order, OrderLine, OrderOutcome, OrderStatus,
    Settlement,
};

/// The statements of [`apply_order`] on one database's connection.
#[async_trait]
pub(crate) trait OrderStatements: Send {
    /// Inserts the order as `pending` with the fingerprint of its payload
    /// unless it exists, locks it, and answers its status and the
    /// fingerprint it was first written with.
    async fn open_order(
        &mut self,
        order: &NewOrder,
        fingerprint: &str,
    ) -> Result<(OrderStatus, Option<String>), StoreError>;
    /// Whether the user exists.
    async fn user_exists(&mut self, user_id: Uuid) -> Result<bool, StoreError>;
    /// Takes `quantity` copies of the offer if it has that many: answers its
    /// book and its price of one copy.
    async fn take_stock(
        &mut self,
        offer_id: Uuid,
        quantity: i32,
    ) -> Result<Option<(Uuid, Decimal)>, StoreError>;
    /// Copies left in the offer, if it exists.
    async fn stock_left(&mut self, offer_id: Uuid) -> Result<Option<i32>, StoreError>;
    /// Stages `event` in the transactional outbox.
    async fn stage(&mut self, event: &Envelope) -> Result<(), StoreError>;
    /// Records the settled order: its lines, status, reason and total.
    async fn record(&mut self, order_id: Uuid, settlement: &Settlement) -> Result<(), StoreError>;
    /// Records the durable bus's receipt of the command, if any.
    async fn record_receipt(&mut self, receipt: Option<Receipt>) -> Result<(), StoreError>;
}

/// Applies `order` once on `pool` (see the module documentation).
pub(crate) async fn apply_order<DB>(
    pool: &sqlx::Pool<DB>,
    order: &NewOrder,
    confirmed: ConfirmedEvent<'_>,
    receipt: Option<Receipt>,
) -> Result<OrderOutcome, StoreError>
where
    DB: sqlx::Database,
    DB::Connection: OrderStatements,
{
    let mut tx = pool.begin().await?;
    let fingerprint = order.fingerprint();
    let (status, stored) = tx.open_order(order, &fingerprint).await?;
    if let Some(stored) = stored.filter(|stored| conflicts(Some(stored), &fingerprint)) {
        // Never applied, pending or not: the first payload owns the id.
        return Ok(OrderOutcome::IdConflict { stored });
    }
    if status != OrderStatus::Pending {
        if receipt.is_some() {
            // Settled before: the command is done.
            tx.record_receipt(receipt).await?;
            tx.commit().await?;
        }
        return Ok(OrderOutcome::AlreadyApplied);
    }
    let mut claims = sqlx::Connection::begin(&mut *tx).await?;
    // Users are never deleted: once seen, the buyer stays.
    let claim = if claims.user_exists(order.user_id).await? {
        claim_stock(&mut *claims, &order.quantities).await?
    } else {
        Claim::BuyerMissing(order.user_id)
    };
    let settlement = claim.settle(order);
    match settlement.outcome {
        OrderOutcome::Confirmed => {
            claims.commit().await?;
            tx.stage(&confirmed(settlement.book_ids.clone())?).await?;
        }
        OrderOutcome::OfferMissing(_) | OrderOutcome::BuyerMissing(_) => {
            claims.rollback().await?;
            // Keep the order visible as `pending` while we wait.
            tx.commit().await?;
            return Ok(settlement.outcome);
        }
        _ => claims.rollback().await?,
    }
    tx.record(order.id, &settlement).await?;
    tx.record_receipt(receipt).await?;
    tx.commit().await?;
    Ok(settlement.outcome)
}

/// Claims each quantity in offer-id order; stops at the first item that
/// cannot be served. The caller rolls back on anything but `Claimed`.
async fn claim_stock(
    conn: &mut impl OrderStatements,
    quantities: &[(Uuid, i32)],
) -> Result<Claim, StoreError> {
    let mut lines = Vec::with_capacity(quantities.len());
    for &(offer_id, quantity) in quantities {
        match conn.take_stock(offer_id, quantity).await? {
            Some((book_id, unit_price)) => lines.push(ClaimedLine {
                offer_id,
                book_id,
                quantity,
                unit_price,
            }),
            None => {
                return Ok(match conn.stock_left(offer_id).await? {
                    None => Claim::OfferMissing(offer_id),
                    Some(available) => Claim::NotEnoughStock {
                        offer_id,
                        available,
                    },
                })
            }
        }
    }
    Ok(Claim::Claimed(lines))
}

/// Folds the rows of a page of orders joined with their items (one row per
/// item, an order without items on one row without an item), in the list's
/// order, an order's rows together: each order once, with its items in the
/// rows' order. The orders come without items.
pub(crate) fn gather_orders(
    rows: impl IntoIterator<Item = (Order, Option<OrderLine>)>,
) -> Vec<Order> {
    let mut orders: Vec<Order> = Vec::new();
    for (order, line) in rows {
        if orders.last().is_none_or(|last| last.id != order.id) {
            orders.push(order);
        }
        if let (Some(line), Some(last)) = (line, orders.last_mut()) {
            last.items.push(line);
        }
    }
    orders
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use rust_decimal::Decimal;
    use uuid::Uuid;

    use super::gather_orders;
    use crate::model::{Order, OrderLine, OrderStatus};

    fn order(id: Uuid) -> Order {
        Order {
            id,
            user_id: Uuid::nil(),
            status: OrderStatus::Pending,
            reason: None,
            items: Vec::new(),
            total: Decimal::ZERO,
            created_at: Utc::now(),
        }
    }

    fn line(offer_id: Uuid) -> OrderLine {
        OrderLine {
            offer_id,
            quantity: 1,
            unit_price: None,
            total: None,
        }
    }

    #[test]
    fn rows_of_one_order_fold_into_it_and_an_order_without_items_stays_empty() {
        let (first, second, third) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let orders = gather_orders([
            (order(first), Some(line(a))),
            (order(first), Some(line(b))),
            (order(second), None),
            (order(third), Some(line(c))),
        ]);
        let folded: Vec<(Uuid, Vec<Uuid>)> = orders
            .iter()
            .map(|order| (order.id, order.items.iter().map(|l| l.offer_id).collect()))
            .collect();
        assert_eq!(
            folded,
            vec![(first, vec![a, b]), (second, vec![]), (third, vec![c])]
        );
    }
}
