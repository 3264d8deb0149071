//! `RecordingBus` lets code that sends be tested without any handler;
//! `TestFramework` tests a command handler as given/when/then.

use std::sync::Arc;

use bus_core::{
    testing::{RecordingBus, TestFramework},
    Command, CommandBus, CommandBusExt, CommandHandler, Event, EventBus, EventBusExt, FailureKind,
    HandlerError, Message, MessageContext,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct PlaceOrder {
    sku: String,
    quantity: u32,
}
impl Message for PlaceOrder {
    const NAME: &'static str = "test.PlaceOrder";
}
impl Command for PlaceOrder {}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct CancelOrder {
    id: u32,
}
impl Message for CancelOrder {
    const NAME: &'static str = "test.CancelOrder";
}
impl Command for CancelOrder {}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct OrderPlaced {
    sku: String,
}
impl Message for OrderPlaced {
    const NAME: &'static str = "test.OrderPlaced";
    const VERSION: u32 = 2;
}
impl Event for OrderPlaced {}

/// Application code under test: it only knows the traits.
async fn checkout(commands: &dyn CommandBus, events: &dyn EventBus) {
    commands
        .send(&PlaceOrder {
            sku: "tea".into(),
            quantity: 2,
        })
        .await
        .unwrap();
    commands.send(&CancelOrder { id: 1 }).await.unwrap();
    events
        .publish(&OrderPlaced { sku: "tea".into() })
        .await
        .unwrap();
}

#[tokio::test]
async fn the_recording_bus_records_commands_and_events_in_order_without_handling_them() {
    let bus = RecordingBus::default();

    checkout(&bus, &bus).await;

    let types: Vec<_> = bus
        .dispatched()
        .iter()
        .map(|e| e.message_type.clone())
        .collect();
    assert_eq!(types, ["test.PlaceOrder", "test.CancelOrder"]);
    assert_eq!(
        bus.dispatched_of::<PlaceOrder>(),
        [PlaceOrder {
            sku: "tea".into(),
            quantity: 2
        }]
    );
    assert_eq!(bus.dispatched_of::<CancelOrder>(), [CancelOrder { id: 1 }]);

    let published = bus.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].version, 2);
    assert_eq!(
        bus.published_of::<OrderPlaced>(),
        [OrderPlaced { sku: "tea".into() }]
    );
    assert!(
        bus.published_of::<PlaceOrder>().is_empty(),
        "commands and events are kept apart"
    );
}

#[tokio::test]
async fn clones_of_a_recording_bus_share_one_record() {
    let bus = RecordingBus::default();
    let shared: Arc<dyn CommandBus> = Arc::new(bus.clone());

    shared.send(&CancelOrder { id: 5 }).await.unwrap();

    assert_eq!(bus.dispatched_of::<CancelOrder>(), [CancelOrder { id: 5 }]);
}

/// Places an order for stock that was received and not yet ordered: state
/// derived from the event history on the bus the handler publishes to.
struct PlaceOrderHandler {
    events: RecordingBus,
    orders_seen: Arc<std::sync::atomic::AtomicUsize>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct StockReceived {
    sku: String,
    quantity: u32,
}
impl Message for StockReceived {
    const NAME: &'static str = "test.StockReceived";
}
impl Event for StockReceived {}

impl CommandHandler<PlaceOrder> for PlaceOrderHandler {
    async fn handle(&self, order: PlaceOrder, context: MessageContext) -> Result<(), HandlerError> {
        self.orders_seen
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if order.quantity == 0 {
            panic!("quantity validated upstream");
        }
        let received: u32 = self
            .events
            .published_of::<StockReceived>()
            .iter()
            .filter(|stock| stock.sku == order.sku)
            .map(|stock| stock.quantity)
            .sum();
        if received < order.quantity {
            return Err(HandlerError::retryable(format!(
                "only {received} {} in stock",
                order.sku
            )));
        }
        let event = context
            .event_envelope(&OrderPlaced { sku: order.sku })
            .map_err(|error| HandlerError::permanent(error.to_string()))?;
        self.events
            .publish_envelope(event)
            .await
            .map_err(|error| HandlerError::retryable(error.to_string()))
    }
}

fn place_order_handler(events: RecordingBus) -> PlaceOrderHandler {
    PlaceOrderHandler {
        events,
        orders_seen: Arc::default(),
    }
}

#[tokio::test]
async fn given_stock_when_an_order_is_placed_then_only_the_new_event_is_published() {
    TestFramework::new(place_order_handler)
        .given([StockReceived {
            sku: "tea".into(),
            quantity: 3,
        }])
        .when(PlaceOrder {
            sku: "tea".into(),
            quantity: 2,
        })
        .await
        .then_expect_published([OrderPlaced { sku: "tea".into() }]);
}

#[tokio::test]
async fn given_no_stock_when_an_order_is_placed_then_it_fails_retryable_and_publishes_nothing() {
    let error = TestFramework::new(place_order_handler)
        .given([StockReceived {
            sku: "coffee".into(),
            quantity: 9,
        }])
        .when(PlaceOrder {
            sku: "tea".into(),
            quantity: 1,
        })
        .await
        .then_expect_error_message("only 0 tea in stock");

    assert_eq!(error.kind(), FailureKind::Retryable);
}

#[tokio::test]
async fn a_panicking_handler_under_test_fails_as_it_would_on_a_bus() {
    let then = TestFramework::new(place_order_handler)
        .when(PlaceOrder {
            sku: "tea".into(),
            quantity: 0,
        })
        .await;

    assert!(then.then_published::<OrderPlaced>().is_empty());
    let error = then.then_expect_error();
    assert!(
        matches!(&error, HandlerError::Panicked { message } if message == "quantity validated upstream"),
        "{error:?}"
    );
}

#[tokio::test]
#[should_panic(expected = "published events")]
async fn then_expect_published_fails_the_test_when_the_events_differ() {
    TestFramework::new(place_order_handler)
        .given([StockReceived {
            sku: "tea".into(),
            quantity: 1,
        }])
        .when(PlaceOrder {
            sku: "tea".into(),
            quantity: 1,
        })
        .await
        .then_expect_published([OrderPlaced {
            sku: "coffee".into(),
        }]);
}
