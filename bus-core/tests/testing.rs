//! `RecordingBus` lets code that dispatches be tested without any handler.

use std::sync::Arc;

use bus_core::{
    testing::RecordingBus, Command, CommandBus, CommandBusExt, Event, EventBus, EventBusExt,
    Message,
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
