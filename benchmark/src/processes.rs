//! The system under test as child processes: one `marketplace serve --bus
//! rabbitmq` and one `marketplace worker`, on a fresh database and a fresh
//! RabbitMQ namespace, and everything needed to tear them down again. The
//! broker is one node with classic queues or a cluster with quorum queues
//! ([`Services::on_cluster`]); the raw references connect and declare their
//! queues as the marketplace does there.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bus_rabbitmq::lapin::types::{AMQPValue, FieldTable};
use bus_rabbitmq::lapin::{options::ExchangeDeleteOptions, options::QueueDeleteOptions};
use bus_rabbitmq::lapin::{uri::AMQPUri, Connection, ConnectionProperties};
use reqwest::Url;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::process::{Child, Command};

use crate::cpu::{cpu_ticks, vm_hwm_kib};

/// Where PostgreSQL and RabbitMQ are. The benchmark creates (and drops) its
/// own databases on that server and its own queues on that broker.
#[derive(Debug, Clone)]
pub(crate) struct Services {
    /// Any database URL of the server; its database name is replaced.
    postgres: Url,
    /// The broker, vhost included, or the comma-separated URLs of a
    /// cluster's nodes (as `--amqp-url` of the marketplace takes them).
    pub(crate) amqp_url: String,
    /// The queue type the marketplace and the raw references declare.
    pub(crate) queue_type: QueueType,
    /// The node `rabbitmqctl` lists queues on (`-n`); its default node when
    /// `None`.
    rabbitmqctl_node: Option<String>,
}

/// Classic queues (one node) or quorum queues (replicated over a cluster).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum QueueType {
    Classic,
    Quorum,
}

impl QueueType {
    /// The name `--queue-type` and `x-queue-type` take.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
        }
    }
}

impl Services {
    pub(crate) fn new(database_url: &str, amqp_url: &str) -> Result<Self> {
        let postgres = Url::parse(database_url)
            .with_context(|| format!("invalid database URL {database_url}"))?;
        let services = Self {
            postgres,
            amqp_url: amqp_url.to_owned(),
            queue_type: QueueType::Classic,
            rabbitmqctl_node: None,
        };
        services.amqp_uris()?;
        Ok(services)
    }

    /// The same PostgreSQL server with the cluster whose nodes' AMQP URLs
    /// are `amqp_urls` (comma-separated) and quorum queues; `node` is one of
    /// its nodes, for `rabbitmqctl -n`.
    pub(crate) fn on_cluster(&self, amqp_urls: &str, node: &str) -> Result<Self> {
        let cluster = Self {
            postgres: self.postgres.clone(),
            amqp_url: amqp_urls.to_owned(),
            queue_type: QueueType::Quorum,
            rabbitmqctl_node: Some(node.to_owned()),
        };
        cluster.amqp_uris()?;
        Ok(cluster)
    }

    /// The URL of database `name` on the server.
    pub(crate) fn database_url(&self, name: &str) -> String {
        let mut url = self.postgres.clone();
        url.set_path(&format!("/{name}"));
        url.to_string()
    }

    /// Each broker address of `amqp_url`, parsed.
    fn amqp_uris(&self) -> Result<Vec<AMQPUri>> {
        self.amqp_urls()
            .map(|url| {
                url.parse::<AMQPUri>()
                    .map_err(|error| anyhow::anyhow!("invalid AMQP URL {url}: {error}"))
            })
            .collect()
    }

    fn amqp_urls(&self) -> impl Iterator<Item = &str> {
        self.amqp_url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
    }

    /// The broker addresses as `host:port`, without credentials or vhost.
    pub(crate) fn broker_addresses(&self) -> Vec<String> {
        self.amqp_uris().map_or_else(
            |_| Vec::new(),
            |uris| {
                uris.iter()
                    .map(|uri| format!("{}:{}", uri.authority.host, uri.authority.port))
                    .collect()
            },
        )
    }

    /// A connection to the first broker address that answers, in the order
    /// given (the marketplace shuffles its order once per process).
    pub(crate) async fn connect_broker(&self) -> Result<Connection> {
        let mut last = None;
        for url in self.amqp_urls() {
            match Connection::connect(url, ConnectionProperties::default()).await {
                Ok(connection) => return Ok(connection),
                Err(error) => last = Some(anyhow::Error::new(error)),
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow::anyhow!("no AMQP URL given"))
            .context("connecting to RabbitMQ"))
    }

    /// The arguments of a durable queue of the raw references:
    /// `x-queue-type: quorum` on a cluster, none otherwise.
    pub(crate) fn queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        if self.queue_type == QueueType::Quorum {
            arguments.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(self.queue_type.as_str().into()),
            );
        }
        arguments
    }

    /// The broker's vhost, for `rabbitmqctl -p`.
    fn vhost(&self) -> String {
        self.amqp_uris()
            .ok()
            .and_then(|uris| uris.into_iter().next())
            .map_or_else(|| "/".to_owned(), |uri| uri.vhost)
    }
}

/// The running API and worker, killed when dropped.
#[derive(Debug)]
pub(crate) struct System {
    /// Base URL of the API, e.g. `http://127.0.0.1:40123`.
    pub(crate) api_url: String,
    pub(crate) database: String,
    /// Prefix of every exchange and queue of this run.
    pub(crate) namespace: String,
    pub(crate) api: Child,
    pub(crate) worker: Child,
    /// Directory receiving the processes' logs.
    pub(crate) log_dir: PathBuf,
    services: Services,
}

/// Where the release `marketplace` binary is: next to this executable.
pub(crate) fn marketplace_binary() -> Result<PathBuf> {
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
pub(crate) fn free_port() -> Result<u16> {
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
pub(crate) fn spawn(binary: &Path, args: &[&str], log_dir: &Path, name: &str) -> Result<Child> {
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
pub(crate) async fn seed(
    services: &Services,
    database: &str,
    books: i64,
    offers_per_book: i64,
    log_dir: &Path,
) -> Result<()> {
    let url = services.database_url(database);
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
pub(crate) async fn wait_ready(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<()> {
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

/// Starts `marketplace` with `args` and waits until its health endpoint on
/// `listen` answers.
pub(crate) async fn start(
    client: &reqwest::Client,
    args: &[&str],
    log_dir: &Path,
    name: &str,
    listen: &str,
) -> Result<Child> {
    let child = spawn(&marketplace_binary()?, args, log_dir, name)?;
    let health = format!("http://{listen}/health/ready");
    wait_ready(client, &health, Duration::from_secs(60)).await?;
    Ok(child)
}

impl System {
    /// Starts the API, waits for it, then starts the worker and waits for it,
    /// on database `bench_{id}` and namespace `bench-{id}`.
    pub(crate) async fn start(
        client: &reqwest::Client,
        services: &Services,
        id: &str,
    ) -> Result<Self> {
        let database = format!("bench_{id}");
        let namespace = format!("bench-{id}");
        let database_url = services.database_url(&database);
        let log_dir = std::env::temp_dir().join(format!("marketplace-bench-{id}"));
        std::fs::create_dir_all(&log_dir).context("creating the log directory")?;

        // Both processes share the database, the namespace and the broker.
        let shared = [
            "--database-url",
            &database_url,
            "--namespace",
            &namespace,
            "--amqp-url",
            &services.amqp_url,
            "--queue-type",
            services.queue_type.as_str(),
        ];
        let api_listen = format!("127.0.0.1:{}", free_port()?);
        // No rate limit: the load comes from one address (127.0.0.1).
        let api_args = [
            &[
                "serve",
                "--bus",
                "rabbitmq",
                "--listen",
                &api_listen,
                "--rate-limit-per-second",
                "0",
            ],
            &shared[..],
        ];
        // Until the worker exists the struct is not built: a failure drops `api`
        // (kill_on_drop), and the caller cleans the database and namespace.
        let api = start(client, &api_args.concat(), &log_dir, "api", &api_listen).await?;
        let worker_listen = format!("127.0.0.1:{}", free_port()?);
        let worker_args = [&["worker", "--health-listen", &worker_listen], &shared[..]];
        let worker = start(
            client,
            &worker_args.concat(),
            &log_dir,
            "worker",
            &worker_listen,
        )
        .await?;
        Ok(Self {
            api_url: format!("http://{api_listen}"),
            database,
            namespace,
            api,
            worker,
            log_dir,
            services: services.clone(),
        })
    }

    /// Fills the run's database with `books` books (and their sellers and
    /// offers) with `marketplace seed`.
    pub(crate) async fn seed(&self, books: i64) -> Result<()> {
        seed(&self.services, &self.database, books, 2, &self.log_dir).await
    }

    /// The broker (or cluster) both processes use.
    pub(crate) fn services(&self) -> &Services {
        &self.services
    }

    /// A connection pool on the run's database.
    pub(crate) async fn pool(&self) -> Result<PgPool> {
        PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.services.database_url(&self.database))
            .await
            .context("connecting to the bench database")
    }

    /// Peak resident set size (VmHWM) of the API and the worker, in KiB.
    pub(crate) fn peak_rss_kib(&self) -> (Option<u64>, Option<u64>) {
        (
            self.api.id().and_then(vm_hwm_kib),
            self.worker.id().and_then(vm_hwm_kib),
        )
    }

    /// Stops (`SIGSTOP`) or continues (`SIGCONT`) the worker, so that a
    /// measurement of the API alone does not share the CPUs with the worker
    /// applying what the API accepts; the broker keeps the messages meanwhile.
    pub(crate) fn pause_worker(&self, paused: bool) -> Result<()> {
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
    pub(crate) async fn wait_worker_idle(&self) -> Result<()> {
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
    pub(crate) async fn stop(&mut self) {
        let _ = self.api.kill().await;
        let _ = self.worker.kill().await;
    }
}

/// Drops database `name` (forcing out any connection left).
pub(crate) async fn drop_database(services: &Services, name: &str) -> Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&services.database_url("postgres"))
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

fn rabbitmqctl_names(services: &Services, what: &str) -> Result<Vec<String>> {
    let vhost = services.vhost();
    let mut command = std::process::Command::new("rabbitmqctl");
    if let Some(node) = &services.rabbitmqctl_node {
        command.args(["-n", node]);
    }
    let output = command
        .args(["-q", "--no-table-headers", what, "-p", &vhost, "name"])
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
/// (names listed with `rabbitmqctl`, on the cluster's node when there is
/// one, deleted over AMQP). Returns how many
/// queues and exchanges were deleted.
pub(crate) async fn delete_namespace(services: &Services, prefix: &str) -> Result<(usize, usize)> {
    let queues: Vec<String> = rabbitmqctl_names(services, "list_queues")?
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .collect();
    let exchanges: Vec<String> = rabbitmqctl_names(services, "list_exchanges")?
        .into_iter()
        .filter(|name| name.starts_with(prefix))
        .collect();
    let connection = services
        .connect_broker()
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
