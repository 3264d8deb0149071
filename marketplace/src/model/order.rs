//! Orders: what a buyer asked for, what claiming its stock decided, and
//! what the buyer was charged.

use std::{collections::BTreeMap, fmt, str::FromStr};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    /// Recorded, waiting for its buyer or an offer that does not exist yet.
    Pending,
    /// Every item's stock was claimed.
    Confirmed,
    /// Nothing was claimed; the order carries a reason.
    Rejected,
}

impl OrderStatus {
    /// The stored and serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Confirmed => "confirmed",
            Self::Rejected => "rejected",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A stored status that is none of [`OrderStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown order status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for OrderStatus {
    type Err = UnknownStatus;

    fn from_str(status: &str) -> Result<Self, Self::Err> {
        match status {
            "pending" => Ok(Self::Pending),
            "confirmed" => Ok(Self::Confirmed),
            "rejected" => Ok(Self::Rejected),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

/// An order and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// Order id.
    pub id: Uuid,
    /// The buyer.
    pub user_id: Uuid,
    /// `pending`, `confirmed` or `rejected`.
    pub status: OrderStatus,
    /// Why the order was rejected.
    pub reason: Option<String>,
    /// What was ordered (empty while `pending`).
    pub items: Vec<OrderLine>,
    /// What the buyer was charged: the sum of the items' totals when
    /// `confirmed`; 0 while `pending` and when `rejected` (nothing charged).
    #[serde(with = "rust_decimal::serde::float")]
    #[schema(value_type = f64, example = 90.64)]
    pub total: Decimal,
    /// When the order was first applied.
    pub created_at: DateTime<Utc>,
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    /// The offer bought from.
    pub offer_id: Uuid,
    /// Copies.
    pub quantity: i32,
    /// The offer's price of one copy when the stock was claimed; `null` on
    /// a rejected order (no stock was claimed).
    #[serde(with = "rust_decimal::serde::float_option")]
    #[schema(value_type = Option<f64>, example = 45.32)]
    pub unit_price: Option<Decimal>,
    /// `unitPrice × quantity`; `null` on a rejected order.
    #[serde(with = "rust_decimal::serde::float_option")]
    #[schema(value_type = Option<f64>, example = 90.64)]
    pub total: Option<Decimal>,
}

/// The copies asked of one offer, added up over an order's items, exceed
/// what a stock can hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantity {quantity} of offer {offer_id} out of range")]
pub struct QuantityOutOfRange {
    /// The offer.
    pub offer_id: Uuid,
    /// The copies asked, added up.
    pub quantity: i64,
}

/// An order to apply: quantities per offer, summed and sorted by offer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// Client-generated order id.
    pub id: Uuid,
    /// The buyer.
    pub user_id: Uuid,
    /// `(offer id, copies)`, one entry per offer, in offer-id order (the
    /// order stock is claimed in, so concurrent orders never deadlock).
    pub quantities: Vec<(Uuid, i32)>,
    /// The last attempt: reject the order if its buyer or an offer is
    /// missing, instead of keeping it `pending` for a retry.
    pub last_attempt: bool,
}

impl NewOrder {
    /// The order of `items` (`(offer id, copies)`): items naming the same
    /// offer are added up.
    pub fn new(
        id: Uuid,
        user_id: Uuid,
        items: impl IntoIterator<Item = (Uuid, i64)>,
        last_attempt: bool,
    ) -> Result<Self, QuantityOutOfRange> {
        let mut summed: BTreeMap<Uuid, i64> = BTreeMap::new();
        for (offer_id, quantity) in items {
            let total = summed.entry(offer_id).or_default();
            *total = total.saturating_add(quantity);
        }
        let quantities = summed
            .into_iter()
            .map(|(offer_id, quantity)| {
                i32::try_from(quantity)
                    .map(|copies| (offer_id, copies))
                    .map_err(|_| QuantityOutOfRange { offer_id, quantity })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            id,
            user_id,
            quantities,
            last_attempt,
        })
    }
}

/// What applying an order did.
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
    /// The buyer does not exist (yet): the order stays `pending`.
    BuyerMissing(Uuid),
    /// An order with this id exists with another payload: nothing changed.
    IdConflict {
        /// Fingerprint of the stored order's payload.
        stored: String,
    },
}

impl OrderOutcome {
    /// The status the order is left in.
    pub fn status(&self) -> OrderStatus {
        match self {
            Self::Rejected { .. } => OrderStatus::Rejected,
            Self::OfferMissing(_) | Self::BuyerMissing(_) => OrderStatus::Pending,
            Self::AlreadyApplied | Self::Confirmed | Self::IdConflict { .. } => {
                OrderStatus::Confirmed
            }
        }
    }

    /// Why the order was rejected, if it was.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Rejected { reason } => Some(reason),
            _ => None,
        }
    }
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
    /// The buyer does not exist (yet): no stock was claimed.
    BuyerMissing(Uuid),
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
        let rejected = |reason: String| Settlement {
            outcome: OrderOutcome::Rejected { reason },
            lines: order
                .quantities
                .iter()
                .map(|&(offer_id, quantity)| SettledLine {
                    offer_id,
                    quantity,
                    unit_price: None,
                    total: None,
                })
                .collect(),
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
            Claim::OfferMissing(offer_id) if !order.last_attempt => Settlement {
                outcome: OrderOutcome::OfferMissing(offer_id),
                lines: Vec::new(),
                total: Decimal::ZERO,
                book_ids: Vec::new(),
            },
            Claim::OfferMissing(offer_id) => rejected(format!("offer {offer_id} does not exist")),
            Claim::BuyerMissing(user_id) if !order.last_attempt => Settlement {
                outcome: OrderOutcome::BuyerMissing(user_id),
                lines: Vec::new(),
                total: Decimal::ZERO,
                book_ids: Vec::new(),
            },
            Claim::BuyerMissing(user_id) => rejected(format!("buyer {user_id} does not exist")),
            Claim::NotEnoughStock {
                offer_id,
                available,
            } => rejected(format!("offer {offer_id} has {available} copies left")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn items_naming_the_same_offer_are_added_up_in_offer_order() {
        let order = NewOrder::new(id(1), id(2), [(id(9), 1), (id(3), 4), (id(9), 2)], false);
        assert_eq!(order.unwrap().quantities, vec![(id(3), 4), (id(9), 3)]);
        let too_many = NewOrder::new(
            id(1),
            id(2),
            [(id(9), i64::from(i32::MAX)), (id(9), 1)],
            false,
        );
        assert_eq!(too_many.unwrap_err().quantity, i64::from(i32::MAX) + 1);
    }

    #[test]
    fn a_confirmed_order_is_charged_each_line_at_its_claimed_price() {
        let order = NewOrder::new(id(1), id(2), [(id(3), 2), (id(4), 3)], false).unwrap();
        let claimed = |offer, book, quantity, price: &str| ClaimedLine {
            offer_id: id(offer),
            book_id: id(book),
            quantity,
            unit_price: price.parse().unwrap(),
        };
        let settled = Claim::Claimed(vec![claimed(3, 7, 2, "45.32"), claimed(4, 7, 3, "7.50")])
            .settle(&order);
        assert_eq!(settled.outcome, OrderOutcome::Confirmed);
        let totals: Vec<_> = settled.lines.iter().map(|line| line.total).collect();
        assert_eq!(
            totals,
            vec![
                Some("90.64".parse().unwrap()),
                Some("22.50".parse().unwrap())
            ]
        );
        assert_eq!(settled.total, "113.14".parse().unwrap());
        assert_eq!(settled.book_ids, vec![id(7)]);
    }

    #[test]
    fn a_rejected_order_is_charged_nothing() {
        let order = NewOrder::new(id(1), id(2), [(id(3), 2)], false).unwrap();
        let settled = Claim::NotEnoughStock {
            offer_id: id(3),
            available: 1,
        }
        .settle(&order);
        assert_eq!(settled.outcome.status(), OrderStatus::Rejected);
        assert_eq!(settled.total, Decimal::ZERO);
        assert_eq!(settled.lines[0].unit_price, None);
        assert!(settled.book_ids.is_empty());
    }

    #[test]
    fn a_missing_buyer_keeps_the_order_pending_until_the_last_attempt() {
        let waiting = NewOrder::new(id(1), id(2), [(id(3), 1)], false).unwrap();
        let settled = Claim::BuyerMissing(id(2)).settle(&waiting);
        assert_eq!(settled.outcome, OrderOutcome::BuyerMissing(id(2)));
        let last = NewOrder {
            last_attempt: true,
            ..waiting
        };
        let settled = Claim::BuyerMissing(id(2)).settle(&last);
        assert_eq!(settled.outcome.status(), OrderStatus::Rejected);
        assert_eq!(settled.total, Decimal::ZERO);
        assert_eq!(
            settled.outcome.reason(),
            Some(format!("buyer {} does not exist", id(2)).as_str())
        );
    }

    #[test]
    fn a_missing_offer_keeps_the_order_pending_until_the_last_attempt() {
        let waiting = NewOrder::new(id(1), id(2), [(id(3), 1)], false).unwrap();
        let settled = Claim::OfferMissing(id(3)).settle(&waiting);
        assert_eq!(settled.outcome.status(), OrderStatus::Pending);
        assert!(settled.lines.is_empty());
        let last = NewOrder {
            last_attempt: true,
            ..waiting
        };
        let settled = Claim::OfferMissing(id(3)).settle(&last);
        assert_eq!(settled.outcome.status(), OrderStatus::Rejected);
        assert!(settled
            .outcome
            .reason()
            .unwrap()
            .contains(&id(3).to_string()));
    }
}
