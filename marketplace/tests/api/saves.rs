//! Saves of a user or a book are applied in the order the API accepted
//! them: a save delivered late (a retry, a slower consumer) never
//! overwrites a later one.

use std::sync::Arc;

use bus_core::{CommandBus, CommandHandler, Envelope, Message, MessageContext, TraceContext};
use bus_rabbitmq::{RabbitConfig, RabbitPublisher, Topology};
use chrono::{Duration, Utc};
use marketplace::{
    commands::{SaveBook, SaveBookHandler, SaveUser, SaveUserHandler, Validated},
    config::BusKind,
};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{spawn, spawn_app, TestApp, TestDb};

/// `command` as the API would have accepted it at `accepted` (seconds from
/// now), delivered once.
fn accepted<C: Message>(command: &C, seconds: i64) -> (Envelope, MessageContext) {
    let mut envelope = Envelope::new(command).unwrap();
    envelope.timestamp = Utc::now() + Duration::seconds(seconds);
    let context = MessageContext::new(Arc::new(envelope.clone()), 1, 1);
    (envelope, context)
}

/// Applies the later save of a user and of a book first, then the earlier
/// ones, through the handlers the buses run; the API reads the later ones.
async fn the_later_saves_stay_when_the_earlier_are_applied_last(app: TestApp) {
    let repositories = app.db.as_ref().unwrap().database().repositories();
    let users = Validated(SaveUserHandler::new(repositories.users));
    let books = Validated(SaveBookHandler::new(repositories.books));
    let (user, book) = (Uuid::new_v4(), Uuid::new_v4());
    let user_saves = [("Annie", 1), ("Ann", 0)];
    for (name, at) in user_saves {
        let command = SaveUser {
            id: user,
            name: name.into(),
        };
        let (_, context) = accepted(&command, at);
        users.handle(command, context).await.unwrap();
    }
    for (title, at) in [("Dune Messiah", 1), ("Dune", 0)] {
        let command = SaveBook {
            requested_by: None,
            id: book,
            title: title.into(),
            author: "Frank Herbert".into(),
        };
        let (_, context) = accepted(&command, at);
        books.handle(command, context).await.unwrap();
    }
    assert_eq!(
        app.get_json(&format!("/users/{user}")).await,
        json!({ "id": user, "name": "Annie" })
    );
    assert_eq!(
        app.get_json(&format!("/books/{book}")).await["title"],
        "Dune Messiah"
    );
    app.shutdown().await;
}

#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn two_saves_applied_in_reverse_order_leave_the_later_one_on_postgres(pool: PgPool) {
    the_later_saves_stay_when_the_earlier_are_applied_last(
        spawn_app(pool, BusKind::InMemory).await,
    )
    .await;
}

#[tokio::test]
async fn two_saves_applied_in_reverse_order_leave_the_later_one_on_sqlite() {
    let app = spawn(TestDb::sqlite().await, BusKind::InMemory, &[]).await;
    the_later_saves_stay_when_the_earlier_are_applied_last(app).await;
}

/// The same through the broker: the later save is published first, so the
/// worker applies the earlier one last.
#[sqlx::test(migrator = "marketplace::MIGRATOR")]
async fn two_saves_delivered_in_reverse_order_by_the_broker_leave_the_later_one(pool: PgPool) {
    let app = spawn_app(pool, BusKind::Rabbitmq).await;
    let config = RabbitConfig {
        namespace: app.namespace.clone(),
        ..RabbitConfig::default()
    };
    let publisher = RabbitPublisher::connect(&config, Topology::new(app.namespace.clone()))
        .await
        .unwrap();
    let user = Uuid::new_v4();
    let trace = TraceContext::new_root();
    for (name, at) in [("Annie", 1), ("Ann", 0)] {
        let (envelope, _) = accepted(
            &SaveUser {
                id: user,
                name: name.into(),
            },
            at,
        );
        publisher
            .send_envelope(envelope.with_trace_parent(&trace))
            .await
            .unwrap();
    }
    publisher.close();
    app.await_commands_applied(&trace, 2).await;
    assert_eq!(
        app.get_json(&format!("/users/{user}")).await["name"],
        "Annie"
    );
    app.shutdown().await;
}
