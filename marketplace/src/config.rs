//! Configuration: command-line flags, each with an environment fallback.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use bus_core::{
    dead_letter_ops::{DeadLetterSelector, GroupBy},
    AsyncBusConfig, BatchConfig, DurableBusConfig, RetryPolicy,
};
use bus_rabbitmq::{QueueType, RabbitConfig};
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use uuid::Uuid;

use crate::auth::{keys::read_secret_file, Claims, JwksPolicy, KeyError, KeySource};

/// The marketplace API and its tools.
#[derive(Debug, Parser)]
#[command(name = "marketplace", version, about)]
pub struct Cli {
    /// What to run (default: `serve`).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Log format.
    #[arg(long, env = "MARKETPLACE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// The subcommands.
// Parsed once at start: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the HTTP API (applies migrations first, unless
    /// `--skip-migrations`).
    Serve(ServeConfig),
    /// Apply the database migrations and exit.
    Migrate(DatabaseConfig),
    /// Fill the database with a demo catalogue (users, books, offers).
    Seed(SeedConfig),
    /// Consume commands and events from RabbitMQ and relay the outbox
    /// (no HTTP besides health probes).
    Worker(WorkerConfig),
    /// Print a bearer token for a user, signed with the HS256 secret
    /// (`--auth-secret`), for development and tests.
    Token(TokenConfig),
    /// List, show, replay or purge the messages given up on (the `.dlq`
    /// queues with `--bus rabbitmq`, else the `bus_dead_letters` table).
    #[command(subcommand)]
    DeadLetters(DeadLetterAction),
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
    /// A bounded in-process queue with retries; answers once queued, in
    /// memory only: a crash loses the commands accepted and not yet applied.
    InMemoryAsync,
    /// The queue is a table of the database (`bus_messages`): answers once
    /// the command is committed there, so a crash loses nothing accepted;
    /// any number of API processes consume it on PostgreSQL.
    Durable,
    /// RabbitMQ: answers once the broker confirmed the persistent message;
    /// `marketplace worker` processes apply it.
    Rabbitmq,
}

/// The default database: an SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://marketplace.db";

/// The database.
#[derive(Debug, Clone, Args)]
pub struct DatabaseConfig {
    /// `sqlite://FILE` (embedded, one process) or `postgres://...`; the
    /// database is created if it does not exist. The RabbitMQ bus and
    /// `worker` need PostgreSQL.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Connections in the pool (reading connections on SQLite).
    #[arg(long, env = "MARKETPLACE_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,
}

/// How a long-running process (`serve`, `worker`) treats the schema at
/// start.
#[derive(Debug, Clone, Args)]
pub struct SchemaArgs {
    /// Do not create the database nor apply migrations at start: only check
    /// that every migration of this release is applied, waiting up to
    /// `--schema-wait` for `marketplace migrate` to apply them. Lets the
    /// process connect as a role without DDL rights. PostgreSQL only.
    #[arg(
        long,
        env = "MARKETPLACE_SKIP_MIGRATIONS",
        value_parser = clap::builder::BoolishValueParser::new(),
        default_value_t = false,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub skip_migrations: bool,
    /// With `--skip-migrations`: longest wait at start for the schema to
    /// reach this release's version before giving up.
    #[arg(long, env = "MARKETPLACE_SCHEMA_WAIT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub schema_wait: Duration,
}

/// `marketplace seed`.
#[derive(Debug, Clone, Args)]
pub struct SeedConfig {
    /// The database.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// Books to create.
    #[arg(long, default_value_t = 10_000)]
    pub books: i64,
    /// Users to create (sellers); default: one per 10 books, at least 10.
    #[arg(long)]
    pub users: Option<i64>,
    /// Offers per book (0 leaves books without offers; at most 20).
    #[arg(long, default_value_t = 2)]
    pub offers_per_book: i64,
}

/// `marketplace serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Bus for commands and events.
    #[arg(long, env = "MARKETPLACE_BUS", value_enum, default_value_t = BusKind::Durable)]
    pub bus: BusKind,
    /// Address the HTTP API listens on.
    #[arg(long, env = "MARKETPLACE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// The database.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// A PostgreSQL streaming replica of `--database-url` (`postgres://...`)
    /// that serves the GET routes whose answer may lag behind the writes by
    /// the replication lag: `GET /books`, `GET /books/{id}`,
    /// `GET /offers/{bookId}`, `GET /users/{id}`, `GET /users/{id}/orders`
    /// and `GET /users/{id}/offers`. `GET /orders/{id}`, every write, the
    /// bus, the workers and migrations stay on the primary. Its pool has
    /// the primary's size and read statement timeout; `/health/ready`
    /// checks it too. Needs `--database-url` on PostgreSQL. Unset: every
    /// read goes to the primary.
    #[arg(long, env = "MARKETPLACE_READ_DATABASE_URL")]
    pub read_database_url: Option<String>,
    /// Whether this process migrates the schema or only checks it.
    #[command(flatten)]
    pub schema: SchemaArgs,
    /// The in-memory async bus.
    #[command(flatten)]
    pub async_bus: AsyncBusArgs,
    /// Retries of failing handlers.
    #[command(flatten)]
    pub retry: RetryArgs,
    /// Batches of the batch handlers.
    #[command(flatten)]
    pub batch: BatchArgs,
    /// RabbitMQ, with `--bus rabbitmq`.
    #[command(flatten)]
    pub rabbitmq: RabbitArgs,
    /// Who may do what: bearer tokens (none configured: open mode).
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Limits of the HTTP edge (timeouts, connections, load, rates).
    #[command(flatten)]
    pub edge: EdgeArgs,
}

/// Limits of the HTTP edge: what one client, or all of them together, can
/// hold of the API (see "Limits" in `marketplace/README.md`).
#[derive(Debug, Clone, Args)]
pub struct EdgeArgs {
    /// How connections are held.
    #[command(flatten)]
    pub connections: ConnectionArgs,
    /// Requests being handled at once, at most; past it a request is
    /// answered 503 at once (load shedding).
    #[arg(long, env = "MARKETPLACE_MAX_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_in_flight: u32,
    /// Requests per second one client may sustain (a signed-in user, else
    /// an IP address); past it, 429. 0 disables rate limiting.
    #[arg(long, env = "MARKETPLACE_RATE_LIMIT_PER_SECOND", default_value_t = 100)]
    pub rate_limit_per_second: u32,
    /// Requests one client may send at once above its rate (the token
    /// bucket's size); 0 disables rate limiting.
    #[arg(long, env = "MARKETPLACE_RATE_LIMIT_BURST", default_value_t = 200)]
    pub rate_limit_burst: u32,
    /// Longest a request may take before it is answered 503.
    #[arg(long, env = "MARKETPLACE_REQUEST_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub request_timeout: Duration,
    /// Longest one SQL statement of a read (a GET) may run on PostgreSQL
    /// before it is cancelled and the read answered 503; 0 disables it.
    /// SQLite has no statement timeout.
    #[arg(long, env = "MARKETPLACE_READ_STATEMENT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub read_statement_timeout: Duration,
    /// Reverse proxies whose `X-Forwarded-For` is believed: comma-separated
    /// CIDRs (or addresses), e.g. `10.0.0.0/8,127.0.0.1`. A request whose
    /// TCP peer is in one of them comes from the rightmost address of
    /// `X-Forwarded-For` that is not itself a trusted proxy; the header of
    /// any other peer is ignored. Empty (the default): trust no one.
    #[arg(long, env = "MARKETPLACE_TRUSTED_PROXIES", value_parser = parse_trusted_proxies, default_value = "", hide_default_value = true)]
    pub trusted_proxies: ProxyNetworks,
}

/// How an HTTP listener holds its connections (the API's, and a worker's
/// health probes').
#[derive(Debug, Clone, Args)]
pub struct ConnectionArgs {
    /// Longest a client may take to send a request's line and headers,
    /// from its first byte (from the connection's opening for the first
    /// request); past it the connection is closed.
    #[arg(long, env = "MARKETPLACE_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    pub header_read_timeout: Duration,
    /// Longest a keep-alive connection may stay idle between two requests
    /// before it is closed.
    #[arg(long, env = "MARKETPLACE_IDLE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "60s")]
    pub idle_timeout: Duration,
    /// Open connections at most; past it new connections wait in the
    /// listen backlog until one closes.
    #[arg(long, env = "MARKETPLACE_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
}

/// A secret: never printed, not even in debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Secret(..)")
    }
}

fn parse_secret(value: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret(value.as_bytes().to_vec()))
}

/// The HS256 secret: verifies tokens (`serve`) and signs them (`token`).
#[derive(Debug, Clone, Args)]
pub struct SecretArgs {
    /// HS256 secret of the tokens, at least 32 bytes (development: anyone
    /// holding it can mint tokens). Turns authentication on.
    #[arg(long, env = "MARKETPLACE_AUTH_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub auth_secret: Option<Secret>,
    /// A file holding the HS256 secret (one line), instead of `--auth-secret`.
    #[arg(long, env = "MARKETPLACE_AUTH_SECRET_FILE")]
    pub auth_secret_file: Option<PathBuf>,
}

impl SecretArgs {
    /// The configured secret, if any (both a secret and a file: an error).
    pub fn secret(&self) -> Result<Option<Vec<u8>>, KeyError> {
        match (&self.auth_secret, &self.auth_secret_file) {
            (Some(_), Some(_)) => Err(KeyError::Conflicting(
                "--auth-secret and --auth-secret-file".to_owned(),
            )),
            (Some(Secret(secret)), None) => Ok(Some(secret.clone())),
            (None, Some(path)) => read_secret_file(path).map(Some),
            (None, None) => Ok(None),
        }
    }
}

/// What a token must name besides its signature.
#[derive(Debug, Clone, Args)]
pub struct ClaimArgs {
    /// The `iss` tokens must carry (an OIDC issuer's URL).
    #[arg(long, env = "MARKETPLACE_AUTH_ISSUER", default_value = "marketplace")]
    pub auth_issuer: String,
    /// The `aud` tokens must carry (one of their audiences).
    #[arg(long, env = "MARKETPLACE_AUTH_AUDIENCE", default_value = "marketplace")]
    pub auth_audience: String,
}

impl ClaimArgs {
    /// The expected claims.
    pub fn claims(&self) -> Claims {
        Claims {
            issuer: self.auth_issuer.clone(),
            audience: self.auth_audience.clone(),
        }
    }
}

/// Authentication of the API: one key source, or none (open mode: no
/// check at all, as the original API).
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// The HS256 secret.
    #[command(flatten)]
    pub secret: SecretArgs,
    /// A PEM file with the issuer's public key (RSA: RS256; EC P-256:
    /// ES256; P-384: ES384). Turns authentication on.
    #[arg(long, env = "MARKETPLACE_AUTH_KEY_FILE")]
    pub auth_key_file: Option<PathBuf>,
    /// The JWKS URL of an OIDC issuer (its `jwks_uri`): keys are cached and
    /// fetched again for a token naming an unknown `kid`. Turns
    /// authentication on.
    #[arg(long, env = "MARKETPLACE_AUTH_JWKS_URL")]
    pub auth_jwks_url: Option<String>,
    /// The expected issuer and audience.
    #[command(flatten)]
    pub claims: ClaimArgs,
    /// Longest wait for the issuer's JWKS.
    #[arg(long, env = "MARKETPLACE_AUTH_JWKS_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub auth_jwks_timeout: Duration,
    /// Least time between two fetches of the JWKS, whatever key ids tokens
    /// name.
    #[arg(long, env = "MARKETPLACE_AUTH_JWKS_MIN_REFETCH", value_parser = humantime::parse_duration, default_value = "30s")]
    pub auth_jwks_min_refetch: Duration,
    /// The JWKS is fetched again at the first token after this long.
    #[arg(long, env = "MARKETPLACE_AUTH_JWKS_MAX_AGE", value_parser = humantime::parse_duration, default_value = "1h")]
    pub auth_jwks_max_age: Duration,
}

impl AuthArgs {
    /// The one configured key source; `None`: open mode.
    pub fn key_source(&self) -> Result<Option<KeySource>, KeyError> {
        let secret = self.secret.secret()?.map(KeySource::Secret);
        let key_file = self.auth_key_file.clone().map(KeySource::PemFile);
        let jwks = self.auth_jwks_url.clone().map(KeySource::Jwks);
        let mut sources: Vec<KeySource> = [secret, key_file, jwks].into_iter().flatten().collect();
        if sources.len() > 1 {
            let named: Vec<&str> = sources.iter().map(KeySource::describe).collect();
            return Err(KeyError::Conflicting(named.join(", ")));
        }
        Ok(sources.pop())
    }

    /// How the JWKS is fetched and kept.
    pub fn jwks_policy(&self) -> JwksPolicy {
        JwksPolicy {
            fetch_timeout: self.auth_jwks_timeout,
            min_refetch_interval: self.auth_jwks_min_refetch,
            max_age: self.auth_jwks_max_age,
        }
    }
}

/// `marketplace token`.
#[derive(Debug, Clone, Args)]
pub struct TokenConfig {
    /// The user the token is for (its `sub`).
    #[arg(long)]
    pub user: Uuid,
    /// How long the token is valid, e.g. `1h`, `30m`, `7d`.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub ttl: Duration,
    /// The signing secret, as `serve` reads it.
    #[command(flatten)]
    pub secret: SecretArgs,
    /// The issuer and audience, as `serve` expects them.
    #[command(flatten)]
    pub claims: ClaimArgs,
}

/// `marketplace worker`.
#[derive(Debug, Clone, Args)]
pub struct WorkerConfig {
    /// Address of the health probes (`/health/live`, `/health/ready`).
    #[arg(
        long,
        env = "MARKETPLACE_HEALTH_LISTEN",
        default_value = "0.0.0.0:8081"
    )]
    pub health_listen: SocketAddr,
    /// How the health probes' listener holds its connections.
    #[command(flatten)]
    pub connections: ConnectionArgs,
    /// The database.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// Whether this process migrates the schema or only checks it.
    #[command(flatten)]
    pub schema: SchemaArgs,
    /// RabbitMQ.
    #[command(flatten)]
    pub rabbitmq: RabbitArgs,
    /// Handlers running at once per queue.
    #[arg(long, env = "MARKETPLACE_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
    /// Retries of failing handlers.
    #[command(flatten)]
    pub retry: RetryArgs,
    /// Batches of the batch handlers.
    #[command(flatten)]
    pub batch: BatchArgs,
    /// The admin routes (pause and resume consumers).
    #[command(flatten)]
    pub admin: AdminArgs,
}

/// The admin routes of a worker's health port: `GET /admin/queues`,
/// `POST /admin/queues/{queue}/pause|resume`.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Bearer token of the admin routes (`Authorization: Bearer <token>`).
    /// Without one (nor `--admin-token-file`) the admin routes are off:
    /// they answer `404`.
    #[arg(long, env = "MARKETPLACE_ADMIN_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub admin_token: Option<Secret>,
    /// A file holding the admin token (one line), instead of `--admin-token`.
    #[arg(long, env = "MARKETPLACE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// How often the worker reads the paused queues from the database, so
    /// that a queue paused or resumed through another worker follows here
    /// within this delay (the worker that took the request applies it at
    /// once).
    #[arg(long, env = "MARKETPLACE_PAUSE_POLL_INTERVAL", value_parser = humantime::parse_duration, default_value = "5s")]
    pub pause_poll_interval: Duration,
}

/// Why the admin token cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    /// Both `--admin-token` and `--admin-token-file`.
    #[error("both --admin-token and --admin-token-file are set; set one")]
    Conflicting,
    /// The token file cannot be read.
    #[error(transparent)]
    Read(#[from] KeyError),
    /// An empty token would match an empty `Bearer`.
    #[error("the admin token is empty (leave it unset to turn the admin routes off)")]
    Empty,
}

impl AdminArgs {
    /// The configured admin token, if any.
    pub fn token(&self) -> Result<Option<Vec<u8>>, AdminTokenError> {
        let token = match (&self.admin_token, &self.admin_token_file) {
            (Some(_), Some(_)) => return Err(AdminTokenError::Conflicting),
            (Some(Secret(token)), None) => Some(token.clone()),
            (None, Some(path)) => Some(read_secret_file(path)?),
            (None, None) => None,
        };
        match token {
            Some(token) if token.is_empty() => Err(AdminTokenError::Empty),
            token => Ok(token),
        }
    }
}

impl WorkerConfig {
    /// Parses `worker` flags from `args` (environment fallbacks apply).
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        parse_flags(args)
    }

    /// RabbitMQ settings of a worker process.
    pub fn rabbit_config(&self) -> RabbitConfig {
        self.rabbitmq
            .settings(self.concurrency, self.retry.policy(), "marketplace-worker")
    }
}

/// The networks of `--trusted-proxies`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyNetworks(pub Vec<IpNet>);

/// `--trusted-proxies`: comma-separated CIDRs (`10.0.0.0/8`, `fd00::/8`) or
/// single addresses (`127.0.0.1`, its own /32 or /128); blanks around them
/// and empty entries are ignored, so an empty value trusts no one.
fn parse_trusted_proxies(value: &str) -> Result<ProxyNetworks, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map(|network| network.trunc())
                .map_err(|_| format!("`{entry}` is neither a CIDR (10.0.0.0/8) nor an IP address"))
        })
        .collect::<Result<_, _>>()
        .map(ProxyNetworks)
}

/// Parses the flags of one subcommand's settings `T` from `args`
/// (environment fallbacks apply).
fn parse_flags<T, I, A>(args: I) -> Result<T, clap::Error>
where
    T: Args + clap::FromArgMatches,
    I: IntoIterator<Item = A>,
    A: Into<std::ffi::OsString> + Clone,
{
    let command = T::augment_args(clap::Command::new("marketplace"));
    let args = std::iter::once(std::ffi::OsString::from("marketplace"))
        .chain(args.into_iter().map(Into::into));
    let matches = command.try_get_matches_from(args)?;
    T::from_arg_matches(&matches)
}

/// Queue flavour on the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueueKind {
    /// Classic durable queues (a single broker).
    Classic,
    /// Quorum queues (replicated; for a RabbitMQ cluster).
    Quorum,
}

/// Connection to RabbitMQ and its topology.
#[derive(Debug, Clone, Args)]
pub struct RabbitArgs {
    /// AMQP URL of the broker, or the comma-separated AMQP URLs of a
    /// cluster's nodes (each with its credentials and vhost): connections go
    /// to the first that answers, in an order shuffled once per process, and
    /// move on to the next after a lost connection.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,
    /// Prefix of every exchange and queue, so deployments can share a broker.
    #[arg(long, env = "MARKETPLACE_NAMESPACE", default_value = "marketplace")]
    pub namespace: String,
    /// Unacknowledged deliveries per queue consumer.
    #[arg(long, env = "MARKETPLACE_PREFETCH", default_value_t = 64)]
    pub prefetch: u16,
    /// Classic or quorum queues.
    #[arg(long, env = "MARKETPLACE_QUEUE_TYPE", value_enum, default_value_t = QueueKind::Classic)]
    pub queue_type: QueueKind,
    /// Longest wait for a publisher confirm before answering 503.
    #[arg(long, env = "MARKETPLACE_CONFIRM_TIMEOUT", value_parser = humantime::parse_duration, default_value = "5s")]
    pub confirm_timeout: Duration,
    /// Most messages a command queue holds; past it writes answer 503
    /// (`x-max-length`, `reject-publish`). 0: unbounded. Changing it on an
    /// existing deployment needs the queues redeclared (see bus-rabbitmq's
    /// README, "Queue bounds").
    #[arg(long, env = "MARKETPLACE_QUEUE_MAX_LENGTH", default_value_t = 100_000)]
    pub queue_max_length: u32,
    /// Most messages a dead-letter queue holds; past it dead letters wait,
    /// requeued, until it is drained. 0: unbounded.
    #[arg(
        long,
        env = "MARKETPLACE_DEAD_LETTER_MAX_LENGTH",
        default_value_t = 100_000
    )]
    pub dead_letter_max_length: u32,
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

/// How the asynchronous buses (the in-memory async bus, the RabbitMQ
/// worker) feed the batch handlers: `SaveUser`, `SaveBook`, `CreateOffer`
/// and `refresh-cheapest-offer` apply up to `--batch-size` messages in one
/// transaction, each message still retried or dead-lettered on its own.
#[derive(Debug, Clone, Args)]
pub struct BatchArgs {
    /// Most messages a batch handler applies in one transaction; 1 disables
    /// batching (one message per transaction). On RabbitMQ it must not
    /// exceed `--prefetch`.
    #[arg(long, env = "MARKETPLACE_BATCH_SIZE", default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..))]
    pub batch_size: u16,
    /// Longest wait, in milliseconds, after the first message of a batch
    /// for more to arrive before the batch runs.
    #[arg(long, env = "MARKETPLACE_BATCH_LINGER_MS", default_value_t = 5)]
    pub batch_linger_ms: u64,
}

impl BatchArgs {
    /// The batches these flags describe.
    pub fn config(&self) -> BatchConfig {
        BatchConfig::new(
            usize::from(self.batch_size),
            Duration::from_millis(self.batch_linger_ms),
        )
    }
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

impl RabbitArgs {
    /// Transport settings for a process named `connection_name`.
    pub fn settings(
        &self,
        concurrency: usize,
        retry: RetryPolicy,
        connection_name: &str,
    ) -> RabbitConfig {
        RabbitConfig {
            amqp_url: self.amqp_url.clone(),
            namespace: self.namespace.clone(),
            prefetch: self.prefetch,
            concurrency,
            retry,
            queue_type: match self.queue_type {
                QueueKind::Classic => QueueType::Classic,
                QueueKind::Quorum => QueueType::Quorum,
            },
            confirm_timeout: self.confirm_timeout,
            connection_name: connection_name.to_owned(),
            queue_max_length: (self.queue_max_length > 0).then_some(self.queue_max_length),
            dead_letter_max_length: (self.dead_letter_max_length > 0)
                .then_some(self.dead_letter_max_length),
            ..RabbitConfig::default()
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
        parse_flags(args)
    }

    /// RabbitMQ settings of the API process.
    pub fn rabbit_config(&self) -> RabbitConfig {
        self.rabbitmq.settings(
            self.async_bus.concurrency,
            self.retry.policy(),
            "marketplace-api",
        )
    }

    /// Settings of the durable bus: the async bus's concurrency, drain
    /// timeout and retries.
    pub fn durable_bus_config(&self) -> DurableBusConfig {
        DurableBusConfig {
            concurrency: self.async_bus.concurrency,
            retry: self.retry.policy(),
            drain_timeout: self.async_bus.drain_timeout,
            ..DurableBusConfig::default()
        }
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

/// `marketplace dead-letters ...`: what to do with the messages given up on.
#[derive(Debug, Clone, Subcommand)]
pub enum DeadLetterAction {
    /// Count dead letters per queue (and reason), with the oldest and the
    /// newest; every message stays where it is.
    List(DeadLetterList),
    /// Print every dead letter of a message id as JSON: envelope, headers,
    /// reason, attempts, times; it stays where it is.
    Show(DeadLetterShow),
    /// Send dead letters back to their queue as a first attempt, keeping
    /// their message id.
    Replay(DeadLetterReplay),
    /// Delete dead letters for good; without `--yes`, only says what it
    /// would delete.
    Purge(DeadLetterPurge),
}

impl DeadLetterAction {
    /// Parses `dead-letters` arguments from `args` (environment fallbacks
    /// apply), e.g. `DeadLetterAction::from_args(["list", "--bus", "rabbitmq"])`.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let command = <Self as Subcommand>::augment_subcommands(
            clap::Command::new("dead-letters").subcommand_required(true),
        );
        let args = std::iter::once(std::ffi::OsString::from("dead-letters"))
            .chain(args.into_iter().map(Into::into));
        let matches = command.try_get_matches_from(args)?;
        <Self as clap::FromArgMatches>::from_arg_matches(&matches)
    }

    /// Where the dead letters of this action are.
    pub fn store(&self) -> &DeadLetterStore {
        match self {
            Self::List(list) => &list.store,
            Self::Show(show) => &show.store,
            Self::Replay(replay) => &replay.store,
            Self::Purge(purge) => &purge.store,
        }
    }
}

/// Where the dead letters are.
#[derive(Debug, Clone, Args)]
pub struct DeadLetterStore {
    /// The bus whose dead letters these are: `rabbitmq` reads the `.dlq`
    /// queues of `--namespace` on `--amqp-url`; the in-memory buses keep
    /// theirs in the `bus_dead_letters` table of `--database-url`.
    #[arg(long, env = "MARKETPLACE_BUS", value_enum, default_value_t = BusKind::Durable)]
    pub bus: BusKind,
    /// The database (without `--bus rabbitmq`).
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// RabbitMQ (with `--bus rabbitmq`).
    #[command(flatten)]
    pub rabbitmq: RabbitArgs,
}

/// How `dead-letters list` groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeadLetterGrouping {
    /// One line per queue.
    Queue,
    /// One line per queue and reason.
    Reason,
}

impl From<DeadLetterGrouping> for GroupBy {
    fn from(grouping: DeadLetterGrouping) -> Self {
        match grouping {
            DeadLetterGrouping::Queue => GroupBy::Queue,
            DeadLetterGrouping::Reason => GroupBy::Reason,
        }
    }
}

/// `marketplace dead-letters list`.
#[derive(Debug, Clone, Args)]
pub struct DeadLetterList {
    /// Where the dead letters are.
    #[command(flatten)]
    pub store: DeadLetterStore,
    /// Only this queue (a work queue or its `.dlq`; on the database
    /// `command.{type}` or `event.{type}.{subscriber}`, as listed).
    #[arg(long)]
    pub queue: Option<String>,
    /// One line per queue, or per queue and reason.
    #[arg(long, value_enum, default_value_t = DeadLetterGrouping::Queue)]
    pub group_by: DeadLetterGrouping,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `marketplace dead-letters show`.
#[derive(Debug, Clone, Args)]
pub struct DeadLetterShow {
    /// Where the dead letters are.
    #[command(flatten)]
    pub store: DeadLetterStore,
    /// The message id.
    pub id: Uuid,
}

/// Which dead letters a replay or purge applies to: at least one criterion,
/// or `--all`; criteria given together must all hold.
#[derive(Debug, Clone, Args)]
#[group(id = "selector", required = true, multiple = true)]
pub struct DeadLetterSelection {
    /// Every dead letter of this message id.
    #[arg(long)]
    pub id: Option<Uuid>,
    /// Those of this queue (as `list` names it, or its `.dlq`).
    #[arg(long)]
    pub queue: Option<String>,
    /// Those whose reason contains this text (case-sensitive).
    #[arg(long)]
    pub reason: Option<String>,
    /// Every dead letter of the store.
    #[arg(long, conflicts_with_all = ["id", "queue", "reason"])]
    pub all: bool,
}

impl DeadLetterSelection {
    /// The selector these flags describe.
    pub fn selector(&self) -> DeadLetterSelector {
        DeadLetterSelector {
            message_id: self.id,
            queue: self.queue.clone(),
            reason: self.reason.clone(),
        }
    }
}

/// `marketplace dead-letters replay`.
#[derive(Debug, Clone, Args)]
pub struct DeadLetterReplay {
    /// Where the dead letters are.
    #[command(flatten)]
    pub store: DeadLetterStore,
    /// Which dead letters.
    #[command(flatten)]
    pub selection: DeadLetterSelection,
    /// Only say what would be replayed.
    #[arg(long)]
    pub dry_run: bool,
    /// Who asks, for the log (default: the OS user).
    #[arg(long, env = "MARKETPLACE_ACTOR")]
    pub actor: Option<String>,
}

/// `marketplace dead-letters purge`.
#[derive(Debug, Clone, Args)]
pub struct DeadLetterPurge {
    /// Where the dead letters are.
    #[command(flatten)]
    pub store: DeadLetterStore,
    /// Which dead letters.
    #[command(flatten)]
    pub selection: DeadLetterSelection,
    /// Only say what would be purged (also the case without `--yes`).
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,
    /// Really delete them.
    #[arg(long)]
    pub yes: bool,
    /// Who asks, for the log (default: the OS user).
    #[arg(long, env = "MARKETPLACE_ACTOR")]
    pub actor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(flags: &[&str]) -> Result<Vec<String>, clap::Error> {
        let config = ServeConfig::from_args(flags)?;
        Ok(config
            .edge
            .trusted_proxies
            .0
            .iter()
            .map(ToString::to_string)
            .collect())
    }

    #[test]
    fn trusted_proxies_are_comma_separated_networks_or_addresses() {
        assert_eq!(trusted(&[]).unwrap(), Vec::<String>::new());
        assert_eq!(
            trusted(&["--trusted-proxies", ""]).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(
            trusted(&["--trusted-proxies", "10.1.2.3/8, 127.0.0.1,fd00::/8,"]).unwrap(),
            ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]
        );
        for wrong in ["10.0.0.0/33", "proxy.example", "10.0.0.0/8;"] {
            let error = trusted(&["--trusted-proxies", wrong]).unwrap_err();
            assert_eq!(
                error.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{wrong}"
            );
        }
    }

    #[test]
    fn batches_default_to_50_messages_or_5_ms_and_a_size_of_1_disables_them() {
        let worker = WorkerConfig::from_args(Vec::<String>::new()).unwrap();
        assert_eq!(
            worker.batch.config(),
            BatchConfig::new(50, Duration::from_millis(5))
        );
        let one = WorkerConfig::from_args(["--batch-size", "1", "--batch-linger-ms", "0"]).unwrap();
        assert!(!one.batch.config().is_batching());
        let serve = ServeConfig::from_args(["--batch-size", "20"]).unwrap();
        assert_eq!(serve.batch.config().max_messages, 20);
        assert!(WorkerConfig::from_args(["--batch-size", "0"]).is_err());
    }
}
