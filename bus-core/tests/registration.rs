//! Handlers are checked once, when the set is built, and a message nobody
//! handles is an error the caller can see, never a panic.

use bus_core::{
    command_fn, event_fn, AsyncBus, AsyncBusConfig, Command, CommandBusExt, DispatchError, Event,
    Handlers, InMemoryBus, Message, Query, QueryBus, QueryError, QueryHandler, RegistrationError,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct OpenAccount {
    owner: String,
}
impl Message for OpenAccount {
    const NAME: &'static str = "test.OpenAccount";
}
impl Command for OpenAccount {}

#[derive(Debug, Serialize, Deserialize)]
struct AccountOpened {
    owner: String,
}
impl Message for AccountOpened {
    const NAME: &'static str = "test.AccountOpened";
}
impl Event for AccountOpened {}

struct Balance;
impl Query for Balance {
    type Output = u64;
}

struct Fixed(u64);
impl QueryHandler<Balance> for Fixed {
    async fn handle(&self, _query: Balance) -> Result<u64, QueryError> {
        Ok(self.0)
    }
}

fn open_account() -> OpenAccount {
    OpenAccount {
        owner: "ada".into(),
    }
}

#[test]
fn a_second_handler_for_the_same_command_is_refused_at_build() {
    let result = Handlers::builder()
        .command(command_fn(|_: OpenAccount, _| async { Ok(()) }))
        .command(command_fn(|_: OpenAccount, _| async { Ok(()) }))
        .build();

    assert_eq!(
        result.unwrap_err(),
        RegistrationError::DuplicateCommandHandler {
            message_type: "test.OpenAccount".into()
        }
    );
}

#[test]
fn two_subscribers_with_the_same_name_on_one_event_are_refused() {
    let result = Handlers::builder()
        .subscribe("audit", event_fn(|_: AccountOpened, _| async { Ok(()) }))
        .subscribe("audit", event_fn(|_: AccountOpened, _| async { Ok(()) }))
        .build();

    assert_eq!(
        result.unwrap_err(),
        RegistrationError::DuplicateSubscriber {
            message_type: "test.AccountOpened".into(),
            subscriber: "audit".into(),
        }
    );
}

#[test]
fn distinct_subscriber_names_on_one_event_are_accepted() {
    let handlers = Handlers::builder()
        .subscribe("audit", event_fn(|_: AccountOpened, _| async { Ok(()) }))
        .subscribe("mailer", event_fn(|_: AccountOpened, _| async { Ok(()) }))
        .build()
        .expect("distinct names are fine");

    let names: Vec<_> = handlers
        .subscribers(AccountOpened::NAME)
        .iter()
        .map(|s| s.subscriber.as_str())
        .collect();
    assert_eq!(names, ["audit", "mailer"]);
}

#[test]
fn subscriber_names_that_cannot_name_a_queue_are_refused() {
    for bad in ["", "with space", "slash/name", "ünïcode", "star*"] {
        let result = Handlers::builder()
            .subscribe(bad, event_fn(|_: AccountOpened, _| async { Ok(()) }))
            .build();

        assert_eq!(
            result.unwrap_err(),
            RegistrationError::InvalidSubscriberName(bad.to_owned()),
            "{bad:?} should be refused"
        );
    }
}

#[tokio::test]
async fn dispatching_a_command_without_handler_on_the_sync_bus_is_a_no_handler_error() {
    let bus = InMemoryBus::new(Handlers::builder().build().unwrap());

    let error = bus.send(&open_account()).await.unwrap_err();

    assert!(
        matches!(&error, DispatchError::NoHandler { message_type } if message_type == "test.OpenAccount"),
        "{error:?}"
    );
}

#[tokio::test]
async fn dispatching_a_command_without_handler_on_the_async_bus_is_a_no_handler_error() {
    let bus = AsyncBus::start(
        Handlers::builder().build().unwrap(),
        AsyncBusConfig::default(),
    );

    let error = bus.send(&open_account()).await.unwrap_err();

    assert!(
        matches!(&error, DispatchError::NoHandler { message_type } if message_type == "test.OpenAccount"),
        "{error:?}"
    );
    assert_eq!(bus.in_flight(), 0, "a refused command takes no capacity");
}

#[test]
fn a_second_handler_for_the_same_query_is_refused_at_build() {
    let result = QueryBus::builder().query(Fixed(1)).query(Fixed(2)).build();

    let error = result.unwrap_err();
    assert!(
        matches!(&error, RegistrationError::DuplicateQueryHandler { query } if query.ends_with("Balance")),
        "{error:?}"
    );
}

#[tokio::test]
async fn asking_a_query_without_handler_is_a_no_handler_error() {
    let bus = QueryBus::builder().build().unwrap();

    let error = bus.ask(Balance).await.unwrap_err();

    assert!(
        matches!(&error, QueryError::NoHandler { query } if query.ends_with("Balance")),
        "{error:?}"
    );
}
