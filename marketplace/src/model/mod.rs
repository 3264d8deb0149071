//! The marketplace's model: what prices and copy counts mean, whatever the
//! transport or the database.

pub mod numbers;

pub use numbers::{
    count_from_json_number, price_error, price_from_json_number, round_price, MAX_PRICE,
    MAX_PRICE_SENT, MIN_PRICE_SENT,
};
