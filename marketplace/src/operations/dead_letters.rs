//! `marketplace dead-letters`: list, show, replay and purge the messages the
//! buses gave up on.
//!
//! With `--bus rabbitmq` they are the messages parked in the `.dlq` queue of
//! each work queue (bus-rabbitmq's [`DeadLetterQueues`]); with the durable
//! and the in-memory async buses, the rows of the `bus_dead_letters` table
//! (bus-core's [`DeadLetterTable`]), which a replay hands back to the
//! running API through the outbox. Every replay and purge, dry runs included, is logged
//! at `INFO` with who asked (`--actor`, else the OS user), the selector and
//! how many messages it concerned.
//!
//! What is printed goes to standard output (the logs go to standard error),
//! so it can be piped: `list --json` and `show` print JSON.

use std::io::Write;

use anyhow::Context;
use bus_core::{
    dead_letter_ops::{DeadLetterGroup, DeadLetterRecord, DeadLetterSelector, GroupBy},
    DeadLetterTable, RetryPolicy,
};
use bus_rabbitmq::DeadLetterQueues;
use uuid::Uuid;

use crate::{
    config::{BusKind, DeadLetterAction, DeadLetterStore},
    startup,
    store::Database,
};

/// Where the dead letters are, opened.
enum Store {
    Queues {
        queues: Box<DeadLetterQueues>,
        namespace: String,
    },
    Table(DeadLetterTable),
}

impl Store {
    async fn open(store: &DeadLetterStore) -> anyhow::Result<Self> {
        if store.bus == BusKind::Rabbitmq {
            let rabbit =
                store
                    .rabbitmq
                    .settings(1, RetryPolicy::default(), "marketplace-dead-letters");
            let topology = startup::rabbit_topology(&rabbit)?;
            return Ok(Self::Queues {
                queues: Box::new(DeadLetterQueues::new(&rabbit, &topology)),
                namespace: rabbit.namespace,
            });
        }
        let database = startup::connect(&store.database).await?;
        Ok(Self::Table(match database {
            Database::Postgres(pool) => DeadLetterTable::Postgres(pool),
            Database::Sqlite(store) => DeadLetterTable::Sqlite(store.writer().clone()),
        }))
    }

    /// What the logs call this store.
    fn describe(&self) -> String {
        match self {
            Self::Queues { namespace, .. } => format!("rabbitmq namespace {namespace}"),
            Self::Table(_) => "database table bus_dead_letters".to_owned(),
        }
    }

    async fn summarize(
        &self,
        selector: &DeadLetterSelector,
        group_by: GroupBy,
    ) -> anyhow::Result<Vec<DeadLetterGroup>> {
        Ok(match self {
            Self::Queues { queues, .. } => queues.summarize(selector, group_by).await?,
            Self::Table(table) => table.summarize(selector, group_by).await?,
        })
    }

    async fn find(&self, selector: &DeadLetterSelector) -> anyhow::Result<Vec<DeadLetterRecord>> {
        Ok(match self {
            Self::Queues { queues, .. } => queues.find(selector).await?,
            Self::Table(table) => table.find(selector).await?,
        })
    }

    async fn replay(
        &self,
        selector: &DeadLetterSelector,
        dry_run: bool,
    ) -> anyhow::Result<Vec<DeadLetterRecord>> {
        Ok(match self {
            Self::Queues { queues, .. } => queues.replay(selector, dry_run).await?,
            Self::Table(table) => table.replay(selector, dry_run).await?,
        })
    }

    async fn purge(
        &self,
        selector: &DeadLetterSelector,
        dry_run: bool,
    ) -> anyhow::Result<Vec<DeadLetterRecord>> {
        Ok(match self {
            Self::Queues { queues, .. } => queues.purge(selector, dry_run).await?,
            Self::Table(table) => table.purge(selector, dry_run).await?,
        })
    }
}

/// Runs `action`, writing what it reports to `out`. An error (store
/// unreachable, replay not confirmed, `show` of an unknown id) is returned
/// for the process to exit non-zero; a dry run is not an error.
pub async fn run(action: &DeadLetterAction, out: &mut dyn Write) -> anyhow::Result<()> {
    let store = Store::open(action.store()).await?;
    match action {
        DeadLetterAction::List(list) => {
            let selector = DeadLetterSelector {
                queue: list.queue.clone(),
                ..DeadLetterSelector::default()
            };
            let groups = store.summarize(&selector, list.group_by.into()).await?;
            if list.json {
                serde_json::to_writer_pretty(&mut *out, &groups)?;
                writeln!(out)?;
            } else {
                write_groups(out, &groups)?;
            }
        }
        DeadLetterAction::Show(show) => {
            let selector = DeadLetterSelector {
                message_id: Some(show.id),
                ..DeadLetterSelector::default()
            };
            let found = store.find(&selector).await?;
            anyhow::ensure!(
                !found.is_empty(),
                "no dead letter with message id {} in the {}",
                show.id,
                store.describe()
            );
            serde_json::to_writer_pretty(&mut *out, &found)?;
            writeln!(out)?;
        }
        DeadLetterAction::Replay(replay) => {
            let selector = replay.selection.selector();
            let actor = actor(replay.actor.as_deref());
            let replayed = store
                .replay(&selector, replay.dry_run)
                .await
                .with_context(|| format!("replay of {selector} by {actor}"))?;
            tracing::info!(
                %actor,
                selector = %selector,
                store = %store.describe(),
                dry_run = replay.dry_run,
                count = replayed.len(),
                "dead letters replayed"
            );
            let what = if replay.dry_run {
                "dry run: would replay"
            } else {
                "replayed"
            };
            write_records(out, what, &selector, &replayed)?;
        }
        DeadLetterAction::Purge(purge) => {
            let selector = purge.selection.selector();
            let actor = actor(purge.actor.as_deref());
            let dry_run = purge.dry_run || !purge.yes;
            let purged = store
                .purge(&selector, dry_run)
                .await
                .with_context(|| format!("purge of {selector} by {actor}"))?;
            tracing::info!(
                %actor,
                selector = %selector,
                store = %store.describe(),
                dry_run,
                count = purged.len(),
                "dead letters purged"
            );
            let what = match (dry_run, purge.yes) {
                (false, _) => "purged",
                (true, false) if !purge.dry_run => "dry run (add --yes to purge): would purge",
                (true, _) => "dry run: would purge",
            };
            write_records(out, what, &selector, &purged)?;
        }
    }
    Ok(())
}

/// Who runs the tool: `--actor`, else the OS user.
fn actor(flag: Option<&str>) -> String {
    flag.map(str::to_owned)
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn time(at: Option<chrono::DateTime<chrono::Utc>>) -> String {
    at.map_or_else(
        || "-".to_owned(),
        |at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

/// One aligned line per group, under a header.
fn write_groups(out: &mut dyn Write, groups: &[DeadLetterGroup]) -> std::io::Result<()> {
    if groups.is_empty() {
        return writeln!(out, "no dead letters");
    }
    let by_reason = groups.iter().any(|group| group.reason.is_some());
    let mut rows = vec![row_of(
        by_reason,
        ["COUNT", "OLDEST", "NEWEST", "QUEUE", "REASON"].map(str::to_owned),
    )];
    for group in groups {
        rows.push(row_of(
            by_reason,
            [
                group.count.to_string(),
                time(group.oldest),
                time(group.newest),
                group.queue.clone(),
                group.reason.clone().unwrap_or_default(),
            ],
        ));
    }
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", cells.join("  ").trim_end())?;
    }
    Ok(())
}

fn row_of(by_reason: bool, cells: [String; 5]) -> Vec<String> {
    let mut row = cells.to_vec();
    if !by_reason {
        row.pop();
    }
    row
}

/// `what N dead letter(s) (selector)`, then one line per message.
fn write_records(
    out: &mut dyn Write,
    what: &str,
    selector: &DeadLetterSelector,
    records: &[DeadLetterRecord],
) -> std::io::Result<()> {
    writeln!(out, "{what} {} dead letter(s) ({selector})", records.len())?;
    for record in records {
        let id = record
            .message_id
            .as_ref()
            .map_or_else(|| "-".to_owned(), Uuid::to_string);
        writeln!(out, "  {id}  {}  {}", record.queue, record.reason)?;
    }
    Ok(())
}
