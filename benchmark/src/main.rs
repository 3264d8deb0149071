//! Side-by-side benchmark of the marketplace over RabbitMQ and PostgreSQL.
//!
//! Starts `marketplace serve --bus rabbitmq` and `marketplace worker` (release
//! build) on a fresh database and namespace and measures, phase by phase
//! ([`phases`]): accepted `POST /offer` beside raw lapin confirmed publishes
//! at several concurrencies, the same with the consumers applying meanwhile
//! beside the raw two hops ([`raw_two_hop`]), latency at 25/50/75% of the
//! maximum rate (open loop), the end-to-end applied rate
//! beside those raw two hops, the durable bus in process and accepted
//! offers on it (the default; SQLite, PostgreSQL) beside raw batched
//! inserts into `bus_messages` and beside the in-memory bus,
//! then `GET /books`
//! and `GET /offers/{bookId}` beside the same SQL run by pgbench on
//! catalogues of 10,000 and 1,000,000 books; given a cluster's addresses,
//! accepted offers and offers applied end to end on that cluster with
//! quorum queues, beside the raw references on it. [`report`] writes
//! `docs/performance.md` from `templates/` and draws its charts.
//!
//! The helpers: [`processes`] (the system under test and its cleanup),
//! [`load`] (closed-loop load), [`raw_lapin`], [`bare_axum`] and [`pgbench`]
//! (the references), [`stats`] (percentiles), [`cpu`] (CPU and memory from
//! `/proc`), [`charts`], [`tools`] (finding pgbench and a font).
//!
//! Run: `cargo build --release -p marketplace && cargo run --release -p benchmark`;
//! `-- --help` lists the options for partial runs.

mod bare_axum;
mod charts;
mod cpu;
mod load;
mod machine;
mod pgbench;
mod phases;
mod processes;
mod raw_lapin;
mod raw_two_hop;
mod report;
mod stats;
mod tools;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use uuid::Uuid;

use machine::Machine;
use phases::reads::{ReadOptions, ReadReport};
use processes::{Services, System};
use raw_two_hop::RawTwoHop;
use report::WriteReport;

/// Which phase a partial run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    /// Accepted `POST /offer` beside raw confirmed publishes, per level.
    Offers,
    /// Accepted `POST /offer` with the worker applying meanwhile, beside raw
    /// publishes with the raw two-hop consumers applying meanwhile.
    Applying,
    /// p50 and p99 of `POST /offer` at 25/50/75% of its maximum rate (open
    /// loop, the worker applying), beside raw publishes at the same rates.
    Latency,
    /// Offers applied in PostgreSQL, end to end, beside the raw two hops
    /// (batched consumers straight on lapin and sqlx).
    EndToEnd,
    /// The durable bus in process, then accepted `POST /offer` on it (the
    /// default; SQLite, then PostgreSQL), beside raw batched inserts of the
    /// same rows and the in-memory bus.
    Durable,
    /// `GET /books` and `GET /offers/{bookId}` beside the same SQL in pgbench
    /// (needs pgbench); writes its section to a temporary directory.
    Reads,
    /// Accepted `POST /offer` and offers applied end to end on a cluster
    /// with quorum queues (needs --cluster-amqp-url), beside raw confirmed
    /// publishes and the raw two hops on quorum queues of the same cluster;
    /// replaces its section of performance.md.
    Cluster,
}

/// Side-by-side benchmark of the marketplace over RabbitMQ and PostgreSQL.
///
/// A full run (no --only, no --levels) writes docs/performance.md and its
/// charts; a partial run prints its tables and leaves docs/ alone.
#[derive(Debug, Clone, clap::Parser)]
struct Options {
    /// 2 s per level and 5,000 offers end to end (default 5 s and 50,000).
    #[arg(long)]
    quick: bool,
    /// Run one phase only.
    #[arg(long, value_enum)]
    only: Option<Phase>,
    /// Concurrency levels of the offers phase (default 1,4,16,64,256) and of
    /// the cluster phase (default 16,64).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..))]
    levels: Option<Vec<u64>>,
    /// Seconds per level.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: Option<u64>,
    /// Offers sent end to end.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    offers: Option<u64>,
    /// Rows per transaction of the raw inserts the durable phase compares
    /// with.
    #[arg(long, default_value_t = phases::durable::ROWS_PER_TRANSACTION as u64, value_parser = clap::value_parser!(u64).range(1..))]
    raw_rows_per_transaction: u64,
    /// Seeded books the end-to-end offers are spread over.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(i64).range(1..))]
    books: i64,
    /// `--db-max-connections` of the API in the read phase.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    read_pool: u32,
    /// Read phase on one catalogue of this many books instead of 10,000 and
    /// 1,000,000.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    read_books: Option<i64>,
    /// PostgreSQL server; the benchmark creates and drops its own databases
    /// there, whatever database the URL names.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, default_value = DATABASE_URL)]
    database_url: String,
    /// RabbitMQ broker; the benchmark's queues and exchanges are named
    /// bench-<run id>.* and deleted at the end.
    #[arg(long, env = "AMQP_URL", hide_env_values = true, default_value = AMQP_URL)]
    amqp_url: String,
    /// Comma-separated AMQP URLs of a RabbitMQ cluster's nodes: the cluster
    /// phase runs there, with quorum queues (skipped without it).
    #[arg(long, env = "BENCH_CLUSTER_AMQP_URL", hide_env_values = true)]
    cluster_amqp_url: Option<String>,
    /// A node of that cluster, for `rabbitmqctl -n` (listing the run's
    /// queues to delete them).
    #[arg(
        long,
        env = "BENCH_CLUSTER_NODE",
        default_value = "marketplace-1@localhost"
    )]
    cluster_node: String,
    /// pgbench binary [default: pgbench on PATH, else the newest
    /// /usr/lib/postgresql/*/bin/pgbench].
    #[arg(long, env = "PGBENCH")]
    pgbench: Option<PathBuf>,
    /// TrueType font of the charts [default: DejaVu Sans, or another sans
    /// font found in the usual font directories].
    #[arg(long, env = "BENCHMARK_FONT")]
    font: Option<PathBuf>,
    /// Where a full run writes performance.md and its charts, --only reads
    /// its reads.md and --only cluster replaces its section of
    /// performance.md [default: the repository's docs/, and a temporary
    /// directory for --only reads].
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

/// The database the benchmark connects to first, to create its own.
const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The broker, on its default vhost.
const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl Options {
    fn runs(&self, phase: Phase) -> bool {
        self.only.is_none_or(|only| only == phase)
    }

    /// A partial run prints its figures but does not rewrite the docs.
    fn partial(&self) -> bool {
        self.only.is_some() || self.levels.is_some()
    }

    /// Whether the read phase runs: alone, or after the others in a full run.
    fn runs_reads(&self) -> bool {
        self.only == Some(Phase::Reads) || !self.partial()
    }

    fn cluster_levels(&self) -> Vec<usize> {
        self.levels.as_ref().map_or_else(
            || phases::cluster::LEVELS.to_vec(),
            |levels| levels.iter().map(|&level| level as usize).collect(),
        )
    }

    fn levels(&self) -> Vec<usize> {
        self.levels.as_ref().map_or_else(
            || phases::offers::LEVELS.to_vec(),
            |levels| levels.iter().map(|&level| level as usize).collect(),
        )
    }

    fn level_duration(&self) -> Duration {
        Duration::from_secs(self.seconds.unwrap_or(if self.quick { 2 } else { 5 }))
    }

    fn offers(&self) -> usize {
        self.offers
            .map_or(if self.quick { 5_000 } else { 50_000 }, |n| n as usize)
    }

    fn read_options(&self, services: &Services, pgbench: PathBuf) -> ReadOptions {
        ReadOptions {
            level_duration: self.level_duration(),
            api_pool: self.read_pool,
            books: self.read_books,
            services: services.clone(),
            pgbench,
        }
    }

    /// The command line that produced this run.
    fn command(&self) -> String {
        let args: Vec<String> = std::env::args().skip(1).collect();
        format!(
            "cargo build --release -p marketplace && cargo run --release -p benchmark{}",
            if args.is_empty() {
                String::new()
            } else {
                format!(" -- {}", args.join(" "))
            }
        )
    }
}

/// Where `docs/performance.md` and the charts go by default.
fn docs_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match manifest.parent() {
        Some(root) => root.join("docs"),
        None => manifest.join("docs"),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    // The offers phase's HTTP reference runs as a child of this binary.
    if std::env::args().nth(1).as_deref() == Some(bare_axum::FLAG) {
        return bare_axum::serve().await;
    }
    let options = <Options as clap::Parser>::parse();
    let services = Services::new(&options.database_url, &options.amqp_url)?;
    // Checked before anything is measured, as pgbench is below.
    let cluster = cluster_services(&options, &services)?;
    let id = Uuid::new_v4().simple().to_string();
    // Found before anything is measured: a missing pgbench fails the run
    // at once, not after the write phases.
    let read_options = if options.runs_reads() {
        let pgbench = tools::pgbench(options.pgbench.as_deref())?;
        Some(options.read_options(&services, pgbench))
    } else {
        None
    };
    if let (Some(Phase::Reads), Some(read_options)) = (options.only, &read_options) {
        let reads = run_reads(read_options, &id).await?;
        // Beside docs/, never in it, unless asked: the section and its charts.
        let dir = options
            .out_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("marketplace-bench-reads-{id}")));
        std::fs::create_dir_all(&dir).context("creating the output directory")?;
        let charts =
            chart_font(&options) && written(report::reads_charts(&reads, &dir), "read charts");
        let markdown = report::reads_markdown(&reads, &options.command(), charts)?;
        std::fs::write(dir.join("reads.md"), &markdown).context("writing reads.md")?;
        println!("\n{markdown}\nwrote {}", dir.join("reads.md").display());
        return Ok(());
    }
    if options.only == Some(Phase::Cluster) {
        let Some(cluster) = &cluster else {
            anyhow::bail!("--only cluster needs --cluster-amqp-url (or BENCH_CLUSTER_AMQP_URL)");
        };
        let section = run_cluster(&options, cluster, &id).await?;
        println!("\n{section}");
        let dir = options.out_dir.clone().unwrap_or_else(docs_dir);
        std::fs::create_dir_all(&dir).context("creating the output directory")?;
        let path = dir.join("performance.md");
        let document = match std::fs::read_to_string(&path) {
            Ok(document) => document,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(error).context("reading performance.md"),
        };
        std::fs::write(&path, report::with_cluster_section(&document, &section))
            .context("writing performance.md")?;
        println!("replaced the cluster section of {}", path.display());
        return Ok(());
    }
    if options.only == Some(Phase::Durable) {
        let durable = run_durable(&options, &services, &id).await?;
        println!("\n{}", report::durable_tables(&durable)?);
        println!("partial run (--only): docs/performance.md left as it is");
        return Ok(());
    }
    let outcome = tokio::select! {
        outcome = run_writes(&options, &services, &id) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // The child processes are killed on drop when `run_writes` returns or
    // is cancelled; what they left behind is removed here.
    cleanup(&services, &id).await;
    let writes = outcome?;
    println!("\n{}", report::writes_tables(&writes)?);
    let durable = if options.runs(Phase::Durable) {
        let durable = run_durable(&options, &services, &id).await?;
        println!("\n{}", report::durable_tables(&durable)?);
        Some(durable)
    } else {
        None
    };
    let cluster_markdown = match &cluster {
        _ if !options.runs(Phase::Cluster) => None,
        Some(cluster) => Some(run_cluster(&options, cluster, &id).await?),
        None => {
            println!(
                "no cluster given (--cluster-amqp-url or BENCH_CLUSTER_AMQP_URL): the cluster phase is skipped{}",
                if options.partial() {
                    ""
                } else {
                    ", and the cluster section of performance.md, if any, kept as it is"
                }
            );
            None
        }
    };
    if let Some(section) = &cluster_markdown {
        println!("\n{section}");
    }
    let Some(read_options) = read_options else {
        println!("partial run (--only or --levels): docs/performance.md left as it is");
        return Ok(());
    };
    let reads = run_reads(&read_options, &id).await?;
    println!("\n{}", report::reads_tables(&reads)?);
    let dir = options.out_dir.clone().unwrap_or_else(docs_dir);
    std::fs::create_dir_all(&dir).context("creating the output directory")?;
    let font = chart_font(&options);
    let charts = font && written(report::writes_charts(&writes, &dir), "charts");
    let read_charts = font && written(report::reads_charts(&reads, &dir), "read charts");
    let markdown = report::performance_markdown(
        &writes,
        &reads,
        durable.as_ref(),
        &options.command(),
        charts,
        read_charts,
    )?;
    let path = dir.join("performance.md");
    // Without a cluster this run, the section of an earlier one stays.
    let cluster_markdown = cluster_markdown.or_else(|| {
        let document = std::fs::read_to_string(&path).ok()?;
        report::cluster_section(&document).map(str::to_owned)
    });
    let markdown = match cluster_markdown {
        Some(section) => report::with_cluster_section(&markdown, &section),
        None => markdown,
    };
    std::fs::write(&path, markdown).context("writing performance.md")?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The cluster given by `--cluster-amqp-url`, if any.
fn cluster_services(options: &Options, services: &Services) -> Result<Option<Services>> {
    options
        .cluster_amqp_url
        .as_deref()
        .filter(|urls| !urls.trim().is_empty())
        .map(|urls| services.on_cluster(urls, &options.cluster_node))
        .transpose()
}

/// The cluster phase, its database and queues removed afterwards (also
/// when it fails or is interrupted); returns its section of
/// `performance.md`.
async fn run_cluster(options: &Options, cluster: &Services, id: &str) -> Result<String> {
    let levels = options.cluster_levels();
    let run = phases::cluster::run(
        cluster,
        id,
        &levels,
        options.level_duration(),
        options.offers(),
        options.books,
    );
    let outcome = tokio::select! {
        outcome = run => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    cleanup(cluster, &phases::cluster::run_id(id)).await;
    report::cluster_markdown(&outcome?, &options.command())
}

/// Registers the charts' font; without one the report is written without
/// its charts, and says why here.
fn chart_font(options: &Options) -> bool {
    let font = tools::font(options.font.as_deref());
    written(font.and_then(|font| charts::use_font(&font)), "charts")
}

/// Whether the charts were written; a failure to draw them is reported but
/// does not lose the figures.
fn written(charts: Result<()>, what: &str) -> bool {
    match charts {
        Ok(()) => true,
        Err(error) => {
            eprintln!("{what} not written: {error:#}");
            false
        }
    }
}

/// The durable-bus phase, its database dropped even when interrupted.
async fn run_durable(
    options: &Options,
    services: &Services,
    id: &str,
) -> Result<phases::durable::DurableReport> {
    let levels = options.levels();
    let run = phases::durable::run(
        services,
        id,
        &levels,
        options.level_duration(),
        options.raw_rows_per_transaction as usize,
    );
    tokio::select! {
        runs = run => runs,
        _ = tokio::signal::ctrl_c() => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for database in [format!("bench_durable_{id}"), phases::durable_bus::database_name(id)] {
                if let Err(error) = processes::drop_database(services, &database).await {
                    eprintln!("cleanup: {error:#}");
                }
            }
            Err(anyhow::anyhow!("interrupted"))
        }
    }
}

/// The read phase, its databases dropped even when interrupted.
async fn run_reads(options: &ReadOptions, id: &str) -> Result<ReadReport> {
    tokio::select! {
        reads = phases::reads::run(options, id) => reads,
        _ = tokio::signal::ctrl_c() => {
            phases::reads::cleanup(options, id).await;
            Err(anyhow::anyhow!("interrupted"))
        }
    }
}

async fn cleanup(services: &Services, id: &str) {
    // Give killed processes a moment to close their connections.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for database in [format!("bench_{id}"), format!("bench_{id}_raw")] {
        if let Err(error) = processes::drop_database(services, &database).await {
            eprintln!("cleanup: {error:#}");
        }
    }
    match processes::delete_namespace(services, &format!("bench-{id}")).await {
        Ok((queues, exchanges)) => {
            eprintln!("cleanup: deleted {queues} queues and {exchanges} exchanges of bench-{id}")
        }
        Err(error) => eprintln!("cleanup: {error:#}"),
    }
}

/// The write phases on one API and one worker: accepted offers per level,
/// accepted offers with the consumers applying meanwhile, latency at fixed
/// offered rates, then offers applied end to end, each beside its raw
/// reference.
async fn run_writes(options: &Options, services: &Services, id: &str) -> Result<WriteReport> {
    let machine = Machine::detect();
    let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let client = load::http_client(8)?;
    println!("starting the API and the worker (database bench_{id}, namespace bench-{id})");
    let mut system = System::start(&client, services, id).await?;
    println!("logs in {}", system.log_dir.display());
    let pool = system.pool().await?;
    let duration = options.level_duration();
    let levels = if options.runs(Phase::Offers) {
        phases::offers::run(&system, &pool, &options.levels(), duration).await?
    } else {
        Vec::new()
    };
    // The raw two hops on a scratch database beside the run's, their
    // queues in the run's namespace.
    let raw = if options.runs(Phase::Applying)
        || options.runs(Phase::Latency)
        || options.runs(Phase::EndToEnd)
    {
        let database = format!("{}_raw", system.database);
        Some(RawTwoHop::start(services, &database, &system.namespace).await?)
    } else {
        None
    };
    let applying = match &raw {
        Some(raw) if options.runs(Phase::Applying) => {
            Some(phases::applying::run(&system, &pool, raw, duration).await?)
        }
        _ => None,
    };
    let latency = match &raw {
        Some(raw) if options.runs(Phase::Latency) => {
            let max_rate = applying.map(|applying| applying.api.rate);
            Some(phases::latency::run(&system, &pool, raw, max_rate, duration).await?)
        }
        _ => None,
    };
    let end_to_end = match &raw {
        Some(raw) if options.runs(Phase::EndToEnd) => {
            phases::end_to_end::run(&system, &pool, raw, options.offers(), options.books).await?
        }
        _ => None,
    };
    if let Some(raw) = raw {
        raw.delete().await?;
    }
    let (api_peak_rss_kib, worker_peak_rss_kib) = system.peak_rss_kib();
    pool.close().await;
    system.stop().await;
    Ok(WriteReport {
        machine,
        date,
        level_seconds: duration.as_secs_f64(),
        levels,
        applying,
        latency,
        end_to_end,
        api_peak_rss_kib,
        worker_peak_rss_kib,
    })
}
