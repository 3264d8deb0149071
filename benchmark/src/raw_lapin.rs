//! The raw limit: persistent publishes with publisher confirms straight
//! through lapin, no HTTP, no envelope code, no channel pool; to a classic
//! queue on one broker, to a quorum queue on a cluster.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bus_rabbitmq::lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use bus_rabbitmq::lapin::Confirmation;
use bus_rabbitmq::lapin::{BasicProperties, Channel, Connection};

use crate::load::closed_loop;
use crate::processes::Services;
use crate::stats::LevelResult;

/// A connection to the broker with a durable queue of its own.
pub(crate) struct RawTarget {
    connection: Connection,
    queue: String,
}

/// A message body of the size and shape of the API's `CreateOffer` envelope.
const BODY: &[u8] = br#"{"id":"0190f5a2-5c1e-7d3a-9b4e-2f6c8a1d3e5b","type":"marketplace.CreateOffer","version":1,"timestamp":"2026-01-01T00:00:00.000000Z","headers":{"traceparent":"00-00000000000000000000000000000000-0000000000000000-01"},"payload":{"id":"0190f5a2-5c1e-7d3a-9b4e-2f6c8a1d3e5c","bookId":"0190f5a2-5c1e-7d3a-9b4e-2f6c8a1d3e5d","sellerId":"0190f5a2-5c1e-7d3a-9b4e-2f6c8a1d3e5e","price":12.5,"stock":3}}"#;

impl RawTarget {
    /// Connects to the broker (the first node of a cluster that answers)
    /// and declares the durable queue `{namespace}.raw`, of the services'
    /// queue type.
    pub(crate) async fn connect(services: &Services, namespace: &str) -> Result<Self> {
        let connection = services.connect_broker().await?;
        let queue = format!("{namespace}.raw");
        let channel = connection.create_channel().await?;
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                services.queue_arguments(),
            )
            .await
            .context("declaring the raw queue")?;
        let _ = channel.close(200, "OK".into()).await;
        Ok(Self { connection, queue })
    }

    async fn confirm_channel(&self) -> Result<Channel> {
        let channel = self.connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(channel)
    }

    /// Measures `concurrency` tasks, each with its own confirm channel,
    /// publishing one persistent mandatory message and awaiting its confirm
    /// before the next, for `duration`. The queue is purged afterwards.
    pub(crate) async fn measure(
        &self,
        concurrency: usize,
        duration: Duration,
    ) -> Result<LevelResult> {
        let mut channels = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            channels.push(self.confirm_channel().await?);
        }
        let channels = Arc::new(channels);
        let queue = Arc::new(self.queue.clone());
        let op_channels = Arc::clone(&channels);
        let result = closed_loop(concurrency, duration, move |task, _| {
            let (channels, queue) = (Arc::clone(&op_channels), Arc::clone(&queue));
            async move { publish(&channels[task], &queue, BODY).await }
        })
        .await;
        for channel in channels.iter() {
            let _ = channel.close(200, "OK".into()).await;
        }
        let channel = self.connection.create_channel().await?;
        channel
            .queue_purge(self.queue.as_str().into(), Default::default())
            .await
            .context("purging the raw queue")?;
        let _ = channel.close(200, "OK".into()).await;
        Ok(result)
    }

    /// Deletes the queue and closes the connection.
    pub(crate) async fn delete(self) -> Result<()> {
        let channel = self.connection.create_channel().await?;
        channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .context("deleting the raw queue")?;
        let _ = self.connection.close(200, "OK".into()).await;
        Ok(())
    }
}

/// One persistent, mandatory, confirmed publish to `queue` of `body`.
pub(crate) async fn publish(channel: &Channel, queue: &str, body: &[u8]) -> Result<()> {
    let confirmation = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into()),
        )
        .await?
        .await?;
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        other => bail!("publish not confirmed: {other:?}"),
    }
}
