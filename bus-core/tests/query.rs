//! The query bus answers in-process: `ask` returns what the handler returned.

use std::collections::HashMap;

use bus_core::{Query, QueryBus, QueryError, QueryHandler};

/// The price of a product, if it is listed.
struct PriceOf {
    sku: &'static str,
}
impl Query for PriceOf {
    type Output = Option<u32>;
}

/// How many products are listed.
struct CountListed;
impl Query for CountListed {
    type Output = usize;
}

struct Catalogue(HashMap<&'static str, u32>);

impl QueryHandler<PriceOf> for Catalogue {
    async fn handle(&self, query: PriceOf) -> Result<Option<u32>, QueryError> {
        Ok(self.0.get(query.sku).copied())
    }
}

/// A store that cannot be reached.
struct Unreachable;

impl QueryHandler<CountListed> for Unreachable {
    async fn handle(&self, _query: CountListed) -> Result<usize, QueryError> {
        Err(QueryError::Failed("connection refused".into()))
    }
}

fn bus() -> QueryBus {
    QueryBus::builder()
        .query::<PriceOf, _>(Catalogue(HashMap::from([("tea", 4), ("cake", 3)])))
        .query::<CountListed, _>(Unreachable)
        .build()
        .unwrap()
}

#[tokio::test]
async fn ask_returns_the_answer_of_the_handler() {
    let bus = bus();

    assert_eq!(bus.ask(PriceOf { sku: "tea" }).await.unwrap(), Some(4));
    assert_eq!(bus.ask(PriceOf { sku: "coffee" }).await.unwrap(), None);
}

#[tokio::test]
async fn a_failing_handler_error_reaches_the_caller() {
    let error = bus().ask(CountListed).await.unwrap_err();

    assert!(matches!(error, QueryError::Failed(_)), "{error:?}");
    assert_eq!(error.to_string(), "query failed: connection refused");
}

#[tokio::test]
async fn clones_of_the_bus_answer_with_the_same_handlers() {
    let bus = bus();
    let clone = bus.clone();
    drop(bus);

    assert_eq!(clone.ask(PriceOf { sku: "cake" }).await.unwrap(), Some(3));
}
