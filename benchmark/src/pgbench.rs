//! pgbench as the reference of the read phase: the same statement as the
//! API, run by PostgreSQL's own C client with as many clients as the API
//! has requests in flight.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::Command;
use uuid::Uuid;

use crate::stats::{Latencies, LevelResult};

/// Runs pgbench with `clients` clients for `duration` and reads its rate
/// (`tps`, without connection time) and, from `--log` (one line per
/// transaction), the p50 and p99 latency of its transactions. With `rate`,
/// pgbench schedules that many transactions per second (`--rate`, open
/// loop) and a latency counts from the scheduled start (the logged time
/// plus its schedule lag).
pub(crate) async fn run(
    binary: &Path,
    database_url: &str,
    script: &Path,
    work_dir: &Path,
    clients: usize,
    duration: Duration,
    rate: Option<f64>,
) -> Result<LevelResult> {
    // PostgreSQL's connection limit is shared with whatever else runs on
    // the server: when it is reached, wait for connections to be released.
    let mut attempt = 0;
    loop {
        match run_once(
            binary,
            database_url,
            script,
            work_dir,
            clients,
            duration,
            rate,
        )
        .await
        {
            Err(error) if attempt < 30 && format!("{error:#}").contains("too many clients") => {
                attempt += 1;
                eprintln!("pgbench: PostgreSQL has no connection left for {clients} clients; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            outcome => return outcome,
        }
    }
}

async fn run_once(
    binary: &Path,
    database_url: &str,
    script: &Path,
    work_dir: &Path,
    clients: usize,
    duration: Duration,
    rate: Option<f64>,
) -> Result<LevelResult> {
    let prefix = format!("c{clients}_{}", Uuid::new_v4().simple());
    let threads = clients.min(2);
    let rate_args = match rate {
        Some(rate) => vec!["--rate".to_owned(), format!("{rate:.0}")],
        None => Vec::new(),
    };
    let output = Command::new(binary)
        .current_dir(work_dir)
        // The API's driver speaks plain TCP to PostgreSQL (sqlx is built
        // without TLS); libpq would negotiate TLS when the server offers it.
        .env("PGSSLMODE", "disable")
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &clients.to_string(),
            "-j",
            &threads.to_string(),
            "-T",
            &duration.as_secs().max(1).to_string(),
            "--log",
            &format!("--log-prefix={prefix}"),
        ])
        .args(&rate_args)
        .arg("-f")
        .arg(script)
        // libpq takes a connection URI where the database name goes.
        .arg(database_url)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running pgbench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The first word after `prefix` on the line that starts with it.
    let figure = |prefix: &str| {
        let line = stdout.lines().find_map(|line| line.strip_prefix(prefix))?;
        line.split_whitespace().next()?.parse::<f64>().ok()
    };
    let tps = figure("tps = ").context("no tps in pgbench's output")?;
    let failed = figure("number of failed transactions: ").unwrap_or(0.0) as u64;
    let mut latencies = Latencies::new();
    for entry in std::fs::read_dir(work_dir)? {
        let path = entry?.path();
        let is_ours = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with(&prefix));
        if !is_ours {
            continue;
        }
        let log = std::fs::read_to_string(&path)?;
        // client_id transaction_no time_us script_no epoch epoch_us
        // [schedule_lag_us, with --rate]
        for line in log.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let micro = |n: usize| fields.get(n).and_then(|f| f.parse::<u64>().ok());
            if let Some(time) = micro(2) {
                latencies.record(time + micro(6).unwrap_or(0));
            }
        }
        std::fs::remove_file(&path)?;
    }
    if latencies.count() == 0 {
        bail!("pgbench wrote no transaction log");
    }
    let seconds = latencies.count() as f64 / tps;
    Ok(LevelResult::new(clients, &latencies, failed, seconds))
}
