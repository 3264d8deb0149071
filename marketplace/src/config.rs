//! Configuration: command-line flags, each with an environment fallback.

use std::{net::SocketAddr, time::Duration};

use bus_core::{AsyncBusConfig, RetryPolicy};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// The marketplace API and its tools.
#[derive(Debug, Parser)]
#[command(name = "marketplace", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, env = "MARKETPLACE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (applies migrations first).
    Serve(ServeConfig),
    /// Apply the database migrations and exit.
    Migrate(DatabaseConfig),
}

/// How logs are written (the level comes from `RUST_LOG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Which bus carries commands and events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BusKind {
    /// Handlers run inside the request; a failed handler is the answer.
    InMemory,
    /// A bounded in-process queue with retries; answers once queued.
    InMemoryAsync,
}

/// The database.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// PostgreSQL URL; the database is created if it does not exist.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/marketplace"
    )]
    pub database_url: String,
    /// Connections in the pool.
    #[arg(long, env = "MARKETPLACE_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,
}

/// `marketplace serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Bus for commands and events.
    #[arg(long, env = "MARKETPLACE_BUS", value_enum, default_value_t = BusKind::InMemoryAsync)]
    pub bus: BusKind,
    /// Address the HTTP API listens on.
    #[arg(long, env = "MARKETPLACE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// The database.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// The in-memory async bus.
    #[command(flatten)]
    pub async_bus: AsyncBusArgs,
    /// Retries of failing handlers.
    #[command(flatten)]
    pub retry: RetryArgs,
}

/// Settings of the in-memory async bus.
#[derive(Debug, Clone, Args)]
pub struct AsyncBusArgs {
    /// Commands accepted and not yet applied, at most; past it writes answer 503.
    #[arg(long, env = "MARKETPLACE_QUEUE_CAPACITY", default_value_t = 10_000)]
    pub queue_capacity: usize,
    /// Handlers running at once.
    #[arg(long, env = "MARKETPLACE_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// At shutdown, how long retries may keep waiting before they are dead-lettered.
    #[arg(long, env = "MARKETPLACE_DRAIN_TIMEOUT", value_parser = humantime::parse_duration, default_value = "30s")]
    pub drain_timeout: Duration,
}

/// The retry schedule of failing handlers.
#[derive(Debug, Clone, Args)]
pub struct RetryArgs {
    /// Deliveries of a message, the first included, before it is dead-lettered.
    #[arg(long, env = "MARKETPLACE_RETRY_MAX_ATTEMPTS", default_value_t = 8)]
    pub retry_max_attempts: u32,
    /// Delay before the first retry; doubles at each retry.
    #[arg(long, env = "MARKETPLACE_RETRY_INITIAL_BACKOFF", value_parser = humantime::parse_duration, default_value = "100ms")]
    pub retry_initial_backoff: Duration,
    /// Longest delay between two attempts.
    #[arg(long, env = "MARKETPLACE_RETRY_MAX_BACKOFF", value_parser = humantime::parse_duration, default_value = "30s")]
    pub retry_max_backoff: Duration,
}

impl RetryArgs {
    /// The policy these flags describe.
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.retry_max_attempts.max(1),
            initial_backoff: self.retry_initial_backoff,
            multiplier: 2.0,
            max_backoff: self.retry_max_backoff,
        }
    }
}

impl ServeConfig {
    /// Parses `serve` flags from `args` (environment fallbacks apply), e.g.
    /// `ServeConfig::from_args(["--bus", "in-memory"])`.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(Parser)]
        struct Serve {
            #[command(flatten)]
            config: ServeConfig,
        }
        let args = std::iter::once(std::ffi::OsString::from("serve"))
            .chain(args.into_iter().map(Into::into));
        Serve::try_parse_from(args).map(|serve| serve.config)
    }

    /// Settings of the in-memory async bus.
    pub fn async_bus_config(&self) -> AsyncBusConfig {
        AsyncBusConfig {
            capacity: self.async_bus.queue_capacity,
            concurrency: self.async_bus.concurrency,
            retry: self.retry.policy(),
            drain_timeout: self.async_bus.drain_timeout,
        }
    }
}
