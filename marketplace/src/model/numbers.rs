//! Prices and copy counts as clients send them.
//!
//! Existing clients send prices as JSON floats with any number of decimals
//! (`45.31927383`) and may send a whole count as `3.0`. The rules:
//!
//! - A price is rounded to cents, half away from zero (`0.125` → `0.13`,
//!   `2.675` → `2.68`), from the shortest decimal that denotes the JSON
//!   number (what the client wrote, not the binary float's expansion). The
//!   rounded price must be between `0.01` and [`MAX_PRICE`]: the number sent
//!   must be at least `0.005` ([`MIN_PRICE_SENT`]) and below
//!   `1000000000.005` ([`MAX_PRICE_SENT`]). The rounded value is what is
//!   stored and what every read answers.
//! - A copy count (`stock`, `quantity`) is a JSON integer, or a float with
//!   no fractional part (`3.0`), as JSON Schema counts it; `1.5` is a wrong
//!   type (`400`).

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{de, Deserialize, Deserializer};

/// Highest price of one copy once rounded: one billion. The columns
/// (`NUMERIC(12,2)`, or cents in a 64-bit integer) hold ten times more, so
/// every accepted price fits.
pub const MAX_PRICE: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);

/// Smallest number accepted as a price: it rounds to one cent.
pub const MIN_PRICE_SENT: f64 = 0.005;

/// Numbers sent as prices must be below this: it rounds above [`MAX_PRICE`].
pub const MAX_PRICE_SENT: f64 = 1_000_000_000.005;

/// A cent, the smallest rounded price.
const CENT: Decimal = Decimal::from_parts(1, 0, 0, false, 2);

/// Rounds a price as sent to cents (half away from zero).
///
/// Numbers far outside the accepted range are clamped (to zero, or to ten
/// times the maximum) rather than expanded digit by digit: they are refused
/// all the same, and `2.7e307` has no exact decimal of 28 digits.
pub fn round_price(sent: f64) -> Decimal {
    const FAR_ABOVE: f64 = 1e10;
    if sent.is_nan() || sent.abs() < 1e-6 {
        return Decimal::ZERO;
    }
    if sent.abs() >= FAR_ABOVE {
        let clamped = MAX_PRICE * Decimal::TEN;
        return if sent > 0.0 { clamped } else { -clamped };
    }
    // `f64`'s `Display` writes the shortest decimal that reads back as the
    // same float, without an exponent: the digits the client sent.
    let shortest: Decimal = sent.to_string().parse().unwrap_or(Decimal::ZERO);
    shortest.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// Why a rounded price is refused, if it is.
pub fn price_error(price: Decimal) -> Option<&'static str> {
    if price < CENT {
        Some("must be at least 0.005, so that it rounds to 0.01 or more (prices are kept in cents)")
    } else if price > MAX_PRICE {
        Some("must round to at most 1000000000 (prices are kept in cents)")
    } else {
        None
    }
}

/// Deserializes a price from a JSON number (a string is a wrong type:
/// `400`), rounded to cents; its range is checked by validation (`422`).
pub fn price_from_json_number<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Decimal, D::Error> {
    let sent = <f64 as Deserialize>::deserialize(deserializer)?;
    Ok(round_price(sent))
}

/// Deserializes a copy count from a JSON integer or an integral float
/// (`3.0`). Counts beyond `i64` saturate, so validation answers them `422`
/// like any count out of range.
pub fn count_from_json_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    struct Count;

    impl de::Visitor<'_> for Count {
        type Value = i64;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("an integer")
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<i64, E> {
            Ok(value)
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<i64, E> {
            Ok(i64::try_from(value).unwrap_or(i64::MAX))
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<i64, E> {
            if value.is_finite() && value.fract() == 0.0 {
                // `as` saturates at the bounds of i64, which is what we want.
                Ok(value as i64)
            } else {
                Err(E::invalid_type(de::Unexpected::Float(value), &self))
            }
        }
    }

    deserializer.deserialize_any(Count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cents(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn prices_round_half_away_from_zero_from_the_digits_sent() {
        assert_eq!(round_price(45.31927383), cents("45.32"));
        assert_eq!(round_price(0.125), cents("0.13"));
        // 2.675 is 2.67499999999999982236431605997495353221893310546875 as
        // a float: rounding the float would give 2.67.
        assert_eq!(round_price(2.675), cents("2.68"));
        assert_eq!(round_price(12.0), cents("12"));
        assert_eq!(round_price(-3.555), cents("-3.56"));
    }

    #[test]
    fn the_bounds_sent_round_to_the_bounds_stored() {
        assert_eq!(price_error(round_price(MIN_PRICE_SENT)), None);
        assert!(price_error(round_price(0.004999)).is_some());
        assert!(price_error(round_price(5e-324)).is_some());
        assert_eq!(round_price(1_000_000_000.004), MAX_PRICE);
        assert_eq!(price_error(round_price(1_000_000_000.004)), None);
        assert!(price_error(round_price(MAX_PRICE_SENT)).is_some());
        assert!(price_error(round_price(2.7e307)).is_some());
        assert!(price_error(round_price(-1.0)).is_some());
    }

    #[test]
    fn a_count_may_be_an_integral_float() {
        let count = |json: &str| {
            count_from_json_number(&mut serde_json::Deserializer::from_str(json))
                .map_err(|e| e.to_string())
        };
        assert_eq!(count("3"), Ok(3));
        assert_eq!(count("3.0"), Ok(3));
        assert_eq!(count("1e3"), Ok(1000));
        assert_eq!(count("-2"), Ok(-2));
        assert_eq!(count("1e30"), Ok(i64::MAX));
        assert!(count("1.5").is_err());
        assert!(count("\"3\"").is_err());
    }
}
