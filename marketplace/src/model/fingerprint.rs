//! Fingerprints of create-once payloads (offers, orders).
//!
//! A client generates the id of what it creates, and every bus may deliver
//! a command more than once, so the same id arrives again: with the same
//! payload it is a redelivery or a client's retry, and changes nothing;
//! with another payload it is a conflict, refused without touching the
//! first write. The fingerprint tells the two apart. It is taken over the
//! payload as the store applies it (prices rounded to cents, an order's
//! quantities added up per offer), so `3.0` and `3` copies, or an order's
//! items listed in another order, are the same payload.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{NewOffer, NewOrder};

/// An id was written before with another payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("id-conflict: {kind} {id} exists with another payload (stored fingerprint {stored}, received {received})")]
pub struct IdConflict {
    /// What was created: `offer` or `order`.
    pub kind: &'static str,
    /// The reused id.
    pub id: Uuid,
    /// Fingerprint of the payload that created it.
    pub stored: String,
    /// Fingerprint of the payload received now.
    pub received: String,
}

/// Whether a payload fingerprinted `received` conflicts with the one
/// `stored` with its id. A row written before fingerprints were kept has
/// none, and matches any payload.
pub fn conflicts(stored: Option<&str>, received: &str) -> bool {
    stored.is_some_and(|stored| stored != received)
}

/// SHA-256 of `canonical`, in lowercase hex.
fn sha256_hex(canonical: &str) -> String {
    let digest = Sha256::digest(canonical.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

impl NewOffer {
    /// Fingerprint of what this offer writes (its id excluded).
    pub fn fingerprint(&self) -> String {
        sha256_hex(&format!(
            "offer\nbook {}\nseller {}\nprice {}\nstock {}\n",
            self.book_id,
            self.seller_id,
            self.price.normalize(),
            self.stock
        ))
    }
}

impl NewOrder {
    /// Fingerprint of what this order asks (its id excluded): the buyer and
    /// the copies per offer.
    pub fn fingerprint(&self) -> String {
        let mut canonical = format!("order\nbuyer {}\n", self.user_id);
        for (offer_id, quantity) in &self.quantities {
            let _ = writeln!(canonical, "item {offer_id} {quantity}");
        }
        sha256_hex(&canonical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn an_order_listing_the_same_copies_differently_has_the_same_fingerprint() {
        let first = NewOrder::new(id(1), id(2), [(id(3), 1), (id(4), 2), (id(3), 1)], false);
        let second = NewOrder::new(id(1), id(2), [(id(4), 2), (id(3), 2)], true);
        assert_eq!(first.unwrap().fingerprint(), second.unwrap().fingerprint());
        let other_buyer = NewOrder::new(id(1), id(9), [(id(4), 2), (id(3), 2)], false).unwrap();
        let other_items = NewOrder::new(id(1), id(2), [(id(4), 2), (id(3), 1)], false).unwrap();
        let fingerprint = NewOrder::new(id(1), id(2), [(id(3), 2), (id(4), 2)], false)
            .unwrap()
            .fingerprint();
        assert_ne!(other_buyer.fingerprint(), fingerprint);
        assert_ne!(other_items.fingerprint(), fingerprint);
    }

    #[test]
    fn an_offer_priced_with_more_zeros_has_the_same_fingerprint() {
        let offer = |price: &str, stock| NewOffer {
            id: id(1),
            book_id: id(2),
            seller_id: id(3),
            price: price.parse().unwrap(),
            stock,
        };
        assert_eq!(
            offer("10", 5).fingerprint(),
            offer("10.00", 5).fingerprint()
        );
        assert_ne!(
            offer("10", 5).fingerprint(),
            offer("10.01", 5).fingerprint()
        );
        assert_ne!(offer("10", 5).fingerprint(), offer("10", 6).fingerprint());
        assert_eq!(offer("10", 5).fingerprint().len(), 64);
    }

    #[test]
    fn a_row_without_a_fingerprint_matches_any_payload() {
        assert!(!conflicts(None, "ab"));
        assert!(!conflicts(Some("ab"), "ab"));
        assert!(conflicts(Some("ab"), "cd"));
    }
}
