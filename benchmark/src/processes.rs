//! The system under test as child processes: one `marketplace serve --bus
//! rabbitmq` and one `marketplace worker`, on a fresh database and a fresh
//! RabbitMQ namespace, and everything needed to tear them down again.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bus_rabbitmq::lapin::{options::ExchangeDeleteOptions, options::QueueDeleteOptions};
use bus_rabbitmq::lapin::{Connection, ConnectionProperties};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::process::{Child, Command};

/// PostgreSQL server URL without a database name.
pub const POSTGRES_SERVER: &str = "postgres://postgres@127.0.0.1:5432";
/// RabbitMQ broker URL.
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The running API and worker, killed when dropped.
#[derive(Debug)]
pub struct System {
    /// Base URL of the API, e.g. `http://127.0.0.1:40123`.
    pub api_url: String,
    /// Name of the fresh database both processes use.
    pub database: String,
    /// Prefix of every exchange and queue of this run.
    pub namespace: String,
    /// The `serve --bus rabbitmq` process.
    pub api: Child,
    /// The `worker` process.
    pub worker: Child,
    /// Directory receiving the processes' logs.
    pub log_dir: PathBuf,
}

/// Where the release `marketplace` binary is: next to this executable.
pub fn marketplace_binary() -> Result<PathBuf> {
    let me = std::env::current_exe().context("locating the benchmark executable")?;
    let dir = me
        .parent()
        .context("the benchmark executable has no parent directory")?;
    let binary = dir.join("marketplace");
    if !binary.is_file() {
        bail!(
            "{} not found: build it first with `cargo build --release -p marketplace`",
            binary.display()
        );
    }
    Ok(binary)
}

/// A TCP port on loopback that nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

fn log_file(dir: &Path, name: &str) -> Result<Stdio> {
    let file = std::fs::File::create(dir.join(name))
        .with_context(|| format!("creating log file {name}"))?;
    Ok(Stdio::from(file))
}

/// Starts `binary` with `args`, its output in `name.out.log` and
/// `name.err.log` of `log_dir`, killed when dropped.
pub fn spawn(binary: &Path, args: &[&str], log_dir: &Path, name: &str) -> Result<Child> {
    Command::new(binary)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log_file(log_dir, &format!("{name}.out.log"))?)
        .stderr(log_file(log_dir, &format!("{name}.err.log"))?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} {}", binary.display(), args.join(" ")))
}

/// Runs `marketplace seed` on `database`: `books` books with
/// `offers_per_book` offers each, its output in `log_dir`.
pub async fn seed(database: &str, books: i64, offers_per_book: i64, log_dir: &Path) -> Result<()> {
    let url = format!("{POSTGRES_SERVER}/{database}");
    let mut seed = spawn(
        &marketplace_binary()?,
        &[
            "seed",
            "--database-url",
            &url,
            "--books",
            &books.to_string(),
            "--offers-per-book",
            &offers_per_book.to_string(),
        ],
        log_dir,
        "seed",
    )?;
    let status = seed.wait().await.context("waiting for marketplace seed")?;
    if !status.success() {
        bail!(
            "marketplace seed failed ({status}); see {}",
            log_dir.display()
        );
    }
    Ok(())
}

/// Polls `url` until it answers `200`, for at most `timeout`.
pub async fn wait_ready(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(response) = client.get(url).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{url} not ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl System {
    /// Starts the API, waits for it, then starts the worker and waits for it,
    /// on database `bench_{id}` and namespace `bench-{id}`.
    pub async fn start(client: &reqwest::Client, id: &str) -> Result<Self> {
        let binary = marketplace_binary()?;
        let database = format!("bench_{id}");
        let namespace = format!("bench-{id}");
        let database_url = format!("{POSTGRES_SERVER}/{database}");
        let log_dir = std::env::temp_dir().join(format!("marketplace-bench-{id}"));
        std::fs::create_dir_all(&log_dir).context("creating the log directory")?;

        let api_port = free_port()?;
        let api_listen = format!("127.0.0.1:{api_port}");
        let api = spawn(
            &binary,
            &[
                "serve",
                "--bus",
                "rabbitmq",
                "--listen",
                &api_listen,
                "--database-url",
                &database_url,
                "--namespace",
                &namespace,
                "--amqp-url",
                AMQP_URL,
            ],
            &log_dir,
            "api",
        )?;
        let api_url = format!("http://{api_listen}");
        // Until the worker exists the struct is not built: a failure drops `api`
        // (kill_on_drop), and the caller cleans the database and namespace.
        wait_ready(
            client,
            &format!("{api_url}/health/ready"),
            Duration::from_secs(60),
        )
        .await?;

        let worker_port = free_port()?;
        let worker_listen = format!("127.0.0.1:{worker_port}");
        let worker = spawn(
            &binary,
            &[
                "worker",
                "--health-listen",
                &worker_listen,
                "--database-url",
                &database_url,
                "--namespace",
                &namespace,
                "--amqp-url",
                AMQP_URL,
            ],
            &log_dir,
            "worker",
        )?;
        let system = Self {
            api_url,
            database,
            namespace,
            api,
            worker,
            log_dir,
        };
        wait_ready(
            client,
            &format!("http://{worker_listen}/health/ready"),
            Duration::from_secs(60),
        )
        .await?;
        Ok(system)
    }

    /// Fills the run's database with `books` books (and their sellers and
    /// offers) with `marketplace seed`.
    pub async fn seed(&self, books: i64) -> Result<()> {
        seed(&self.database, books, 2, &self.log_dir).await
    }

    /// A connection pool on the run's database.
    pub async fn pool(&self) -> Result<PgPool> {
        PgPoolOptions::new()
            .max_connections(2)
            .connect(&format!("{POSTGRES_SERVER}/{}", self.database))
            .await
            .context("connecting to the bench database")
    }

    /// Peak resident set size (VmHWM) of the API and the worker, in KiB.
    pub fn peak_rss_kib(&self) -> (Option<u64>, Option<u64>) {
        (
            self.api.id().and_then(vm_hwm_kib),
            self.worker.id().and_then(vm_hwm_kib),
        )
    }

    /// Stops (`SIGSTOP`) or continues (`SIGCONT`) the worker, so that a
    /// measurement of the API alone does not share the CPUs with the worker
    /// applying what the API accepts; the broker keeps the messages meanwhile.
    pub fn pause_worker(&self, paused: bool) -> Result<()> {
        let pid = self.worker.id().context("the worker has exited")?;
        let signal = if paused { "-STOP" } else { "-CONT" };
        let status = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            anyhow::bail!("kill {signal} {pid} failed");
        }
        Ok(())
    }

    /// Waits until the worker has gone quiet (under one CPU tick in 300 ms):
    /// the events that follow the offers (relay, cheapest-offer refresh)
    /// are handled before the next measurement starts.
    pub async fn wait_worker_idle(&self) -> Result<()> {
        let pid = self.worker.id().context("the worker has exited")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        let mut before = cpu_ticks(pid).context("reading the worker's CPU time")?;
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let now = cpu_ticks(pid).context("reading the worker's CPU time")?;
            if now.saturating_sub(before) <= 1 {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("the worker is still busy after 300 s");
            }
            before = now;
        }
    }

    /// Kills both processes and waits for them to exit.
    pub async fn stop(&mut self) {
        let _ = self.api.kill().await;
        let _ = self.worker.kill().await;
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on
/// Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Whose CPU time a [`CpuMeter`] counts.
#[derive(Debug, Clone, Copy)]
pub enum CpuSource {
    /// One process (nothing if `None` or gone).
    Process(Option<u32>),
    /// Every PostgreSQL process on this machine, with the backends that
    /// exited meanwhile (counted by the postmaster that reaped them).
    PostgreSql,
    /// This process's children that exited and were waited for meanwhile
    /// (pgbench runs).
    ExitedChildren,
}

impl CpuSource {
    fn ticks(self) -> Option<u64> {
        match self {
            CpuSource::Process(pid) => cpu_ticks(pid?),
            CpuSource::PostgreSql => postgres_ticks(),
            CpuSource::ExitedChildren => {
                let fields = stat_fields("self")?;
                Some(field(&fields, 13)? + field(&fields, 14)?)
            }
        }
    }
}

/// CPU time used by a few processes over one measurement.
pub struct CpuMeter {
    sources: Vec<CpuSource>,
    start: Vec<Option<u64>>,
}

impl CpuMeter {
    /// Starts counting for `sources`.
    pub fn start(sources: Vec<CpuSource>) -> Self {
        let start = sources.iter().map(|source| source.ticks()).collect();
        Self { sources, start }
    }

    /// Microseconds of CPU each source used since `start`, per one of
    /// `messages`.
    pub fn per_message_us(&self, messages: u64) -> Vec<Option<f64>> {
        self.sources
            .iter()
            .zip(&self.start)
            .map(|(source, start)| {
                let (now, start) = (source.ticks()?, (*start)?);
                (messages > 0).then(|| {
                    now.saturating_sub(start) as f64 / TICKS_PER_SECOND * 1e6 / messages as f64
                })
            })
            .collect()
    }
}

/// The RabbitMQ server's process (`beam.smp`), if it runs on this machine.
pub fn broker_pid() -> Option<u32> {
    pids_named("beam.smp").into_iter().next()
}

/// The processes whose command name (`/proc/<pid>/comm`) is `name`.
fn pids_named(name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|&pid: &u32| comm(&pid.to_string()).as_deref() == Some(name))
        .collect()
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold
/// spaces), from `state` (0) on: `ppid` 1, `utime` 11, `stime` 12, `cutime`
/// 13, `cstime` 14.
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

fn field(fields: &[String], n: usize) -> Option<u64> {
    fields.get(n)?.parse().ok()
}

/// User plus system CPU time of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let fields = stat_fields(&pid.to_string())?;
    Some(field(&fields, 11)? + field(&fields, 12)?)
}

fn comm(pid: &str) -> Option<String> {
    Some(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()?
            .trim()
            .to_owned(),
    )
}

/// CPU time of every `postgres` process, plus the exited backends the
/// postmaster (the one whose parent is not `postgres`) has reaped.
fn postgres_ticks() -> Option<u64> {
    let mut total = 0;
    let mut found = false;
    for pid in pids_named("postgres") {
        let Some(fields) = stat_fields(&pid.to_string()) else {
            continue;
        };
        found = true;
        total += field(&fields, 11).unwrap_or(0) + field(&fields, 12).unwrap_or(0);
        let parent = fields.get(1).and_then(|ppid| comm(ppid));
        if parent.as_deref() != Some("postgres") {
            total += field(&fields, 13).unwrap_or(0) + field(&fields, 14).unwrap_or(0);
        }
    }
    found.then_some(total)
}

/// `VmHWM` of process `pid` from `/proc/<pid>/status`, in KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Drops database `name` (forcing out any connection left).
pub async fn drop_database(name: &str) -> Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&format!("{POSTGRES_SERVER}/postgres"))
        .await
        .context("connecting to the postgres database")?;
    let quoted = name.replace('"', "\"\"");
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS \"{quoted}\" WITH (FORCE)"
    ))
    .execute(&pool)
    .await
    .with_context(|| format!("dropping database {name}"))?;
    pool.close().await;
    Ok(())
}

fn rabbitmqctl_names(what: &str) -> Result<Vec<String>> {
    let output = std::process::Command::new("rabbitmqctl")
        .args(["-q", "--no-table-headers", what, "name"])
        .output()
        .with_context(|| format!("running rabbitmqctl {what}"))?;
    if !output.status.success() {
        bail!(
            "rabbitmqctl {what} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim().to_owned())
        .filter(|line| !line.is_empty())
        .collect())
}

/// Deletes every queue and exchange whose name starts with `prefix`
/// (names listed with `rabbitmqctl`, deleted over AMQP). Returns how many
/// queues and exchanges were deleted.
pub async fn delete_namespace(prefix: &str) -> Result<(usize, usize)> {
    let queues: Vec<String> = rabbitmqctl_names("list_queues")?
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .collect();
    let exchanges: Vec<String> = rabbitmqctl_names("list_exchanges")?
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .collect();
    let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .context("connecting to RabbitMQ for cleanup")?;
    let channel = connection.create_channel().await?;
    for queue in &queues {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .with_context(|| format!("deleting queue {queue}"))?;
    }
    for exchange in &exchanges {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .with_context(|| format!("deleting exchange {exchange}"))?;
    }
    let _ = connection.close(200, "OK".into()).await;
    Ok((queues.len(), exchanges.len()))
}
