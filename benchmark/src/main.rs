//! Side-by-side benchmark of the marketplace over RabbitMQ.
//!
//! Starts `marketplace serve --bus rabbitmq` and `marketplace worker` (release
//! build) on a fresh database and namespace, measures accepted `POST /offer`
//! per second and latency at several concurrencies beside raw lapin confirmed
//! publishes at the same concurrencies, then the end-to-end applied rate, and
//! writes `docs/performance.md` with charts.
//!
//! Then the read phase ([`reads`]): `GET /books` and `GET /offers/{bookId}`
//! beside the same SQL run by pgbench, on catalogues of 10,000 and 1,000,000
//! books; its section is part of `docs/performance.md`.
//!
//! Run: `cargo build --release -p marketplace && cargo run --release -p benchmark`;
//! `-- --help` lists the options for partial runs.

mod charts;
mod load;
mod processes;
mod raw_lapin;
mod reads;
mod report;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use uuid::Uuid;

use load::{
    closed_loop, end_to_end, http_client, offer_body, post_offer, seed, LevelResult, Targets,
};
use processes::{CpuMeter, CpuSource, System};
use raw_lapin::RawTarget;
use report::{CpuPerMessage, Machine, Report};

/// Concurrency levels measured.
const LEVELS: [usize; 5] = [1, 4, 16, 64, 256];
/// Concurrency of the end-to-end run.
const END_TO_END_CONCURRENCY: usize = 64;

/// Which phase a partial run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    /// Accepted `POST /offer` beside raw confirmed publishes, per level.
    Offers,
    /// Offers applied in PostgreSQL, end to end.
    EndToEnd,
    /// `GET /books` and `GET /offers/{bookId}` beside the same SQL in pgbench
    /// (needs pgbench); writes its section to a temporary directory.
    Reads,
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
    /// Concurrency levels of the offers phase (default 1,4,16,64,256).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..))]
    levels: Option<Vec<u64>>,
    /// Seconds per level.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: Option<u64>,
    /// Offers sent end to end.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    offers: Option<u64>,
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
}

impl Options {
    fn runs(&self, phase: Phase) -> bool {
        self.only.is_none_or(|only| only == phase)
    }

    /// A partial run prints its figures but does not rewrite the docs.
    fn partial(&self) -> bool {
        self.only.is_some() || self.levels.is_some()
    }

    fn levels(&self) -> Vec<usize> {
        self.levels.as_ref().map_or_else(
            || LEVELS.to_vec(),
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

    fn read_options(&self) -> reads::ReadOptions {
        reads::ReadOptions {
            level_duration: self.level_duration(),
            api_pool: self.read_pool,
            books: self.read_books,
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

/// Where `docs/performance.md` and the charts go.
fn docs_dir() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    match manifest.parent() {
        Some(root) => root.join("docs"),
        None => manifest.join("docs"),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let options = <Options as clap::Parser>::parse();
    let id = Uuid::new_v4().simple().to_string();
    if options.only == Some(Phase::Reads) {
        let reads = run_reads(&options, &id).await?;
        // Beside docs/, never in it: the section and its charts.
        let dir = std::env::temp_dir().join(format!("marketplace-bench-reads-{id}"));
        std::fs::create_dir_all(&dir).context("creating the output directory")?;
        let charts = written(reads.charts(&dir), "read charts");
        let markdown = reads.markdown(&options.command(), charts);
        std::fs::write(dir.join("reads.md"), &markdown).context("writing reads.md")?;
        println!("\n{markdown}\nwrote {}", dir.join("reads.md").display());
        return Ok(());
    }
    let outcome = tokio::select! {
        outcome = run(&options, &id) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // The child processes are killed on drop when `run` returns or is
    // cancelled; what they left behind is removed here.
    cleanup(&id).await;
    let report = outcome?;
    println!("\n{}", report.tables());
    if options.partial() {
        println!("partial run (--only or --levels): docs/performance.md left as it is");
        return Ok(());
    }
    let reads = run_reads(&options, &id).await?;
    println!("\n{}", reads.tables());
    let dir = docs_dir();
    std::fs::create_dir_all(&dir).context("creating docs/")?;
    let charts = written(report.charts(&dir), "charts");
    let read_charts = written(reads.charts(&dir), "read charts");
    let mut markdown = report.markdown(charts);
    markdown.push('\n');
    markdown.push_str(&reads.markdown(&options.command(), read_charts));
    let path = dir.join("performance.md");
    std::fs::write(&path, markdown).context("writing performance.md")?;
    println!("wrote {}", path.display());
    Ok(())
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

/// The read phase, its databases dropped even when interrupted.
async fn run_reads(options: &Options, id: &str) -> Result<reads::ReadReport> {
    tokio::select! {
        reads = reads::run(options.read_options(), id) => reads,
        _ = tokio::signal::ctrl_c() => {
            reads::cleanup(options.read_options(), id).await;
            Err(anyhow::anyhow!("interrupted"))
        }
    }
}

async fn cleanup(id: &str) {
    // Give killed processes a moment to close their connections.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Err(error) = processes::drop_database(&format!("bench_{id}")).await {
        eprintln!("cleanup: {error:#}");
    }
    match processes::delete_namespace(&format!("bench-{id}")).await {
        Ok((queues, exchanges)) => {
            eprintln!("cleanup: deleted {queues} queues and {exchanges} exchanges of bench-{id}")
        }
        Err(error) => eprintln!("cleanup: {error:#}"),
    }
}

/// Waits until the book's offers in PostgreSQL reach `expected`, so that the
/// worker's backlog does not compete with the next measurement.
async fn drain(pool: &sqlx::PgPool, book: Uuid, expected: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM offers WHERE book_id = $1")
            .bind(book)
            .fetch_one(pool)
            .await
            .context("counting offers")?;
        if count as u64 >= expected {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("worker backlog not drained: {count}/{expected} offers applied");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn measure_api(
    api_url: &str,
    seller: Uuid,
    book: Uuid,
    concurrency: usize,
    duration: Duration,
) -> Result<LevelResult> {
    let client = http_client(concurrency)?;
    let url = format!("{api_url}/offer");
    Ok(closed_loop(concurrency, duration, move |_, n| {
        let (client, url) = (client.clone(), url.clone());
        async move { post_offer(&client, &url, &offer_body(Uuid::new_v4(), book, seller, n)).await }
    })
    .await)
}

async fn run(options: &Options, id: &str) -> Result<Report> {
    let machine = Machine::detect();
    let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let client = http_client(8)?;
    println!("starting the API and the worker (database bench_{id}, namespace bench-{id})");
    let mut system = System::start(&client, id).await?;
    println!("logs in {}", system.log_dir.display());
    let pool = system.pool().await?;

    let duration = options.level_duration();
    let mut levels = Vec::new();
    let mut cpu = Vec::new();
    let broker = processes::broker_pid();
    if options.runs(Phase::Offers) {
        let seller = Uuid::new_v4();
        let book = Uuid::new_v4();
        seed(&client, &system.api_url, seller, book).await?;
        let raw = RawTarget::connect(&system.namespace).await?;
        // Warm up both paths (connections, caches and pools).
        let warm = measure_api(&system.api_url, seller, book, 4, Duration::from_secs(1)).await?;
        let mut accepted = warm.ok;
        raw.measure(4, Duration::from_secs(1)).await?;
        drain(&pool, book, accepted).await?;
        system.wait_worker_idle().await?;

        for concurrency in options.levels() {
            // The API alone, like the raw side: the worker is paused while the
            // API accepts, then applies the backlog before the next measurement.
            system.pause_worker(true)?;
            let meter = CpuMeter::start(vec![
                CpuSource::Process(system.api.id()),
                CpuSource::Process(Some(std::process::id())),
                CpuSource::Process(broker),
            ]);
            let api = measure_api(&system.api_url, seller, book, concurrency, duration).await;
            let api_cpu = api.as_ref().ok().map(|api| meter.per_message_us(api.ok));
            system.pause_worker(false)?;
            let (api, api_cpu) = (api?, api_cpu.unwrap_or_default());
            accepted += api.ok;
            drain(&pool, book, accepted).await?;
            system.wait_worker_idle().await?;
            let meter = CpuMeter::start(vec![
                CpuSource::Process(None),
                CpuSource::Process(Some(std::process::id())),
                CpuSource::Process(broker),
            ]);
            let raw_level = raw.measure(concurrency, duration).await?;
            let raw_cpu = meter.per_message_us(raw_level.ok);
            cpu.push((CpuPerMessage::from(api_cpu), CpuPerMessage::from(raw_cpu)));
            println!(
                "c={concurrency:>3}  API {:>8.0}/s p50 {:>7.2} ms p99 {:>7.2} ms ({} errors) | raw {:>8.0}/s p50 {:>7.2} ms p99 {:>7.2} ms ({} errors) | API/raw {:.3}",
                api.per_second(),
                api.p50_ms,
                api.p99_ms,
                api.errors,
                raw_level.per_second(),
                raw_level.p50_ms,
                raw_level.p99_ms,
                raw_level.errors,
                api.per_second() / raw_level.per_second(),
            );
            levels.push((api, raw_level));
        }
        raw.delete().await?;
    }

    let mut e2e = None;
    if options.runs(Phase::EndToEnd) {
        println!("seeding {} books (marketplace seed)", options.books);
        system.seed(options.books).await?;
        let targets = Targets::load(&pool).await?;
        println!(
            "end to end: {} offers over {} books at concurrency {END_TO_END_CONCURRENCY}",
            options.offers(),
            targets.books.len()
        );
        e2e = match end_to_end(
            &system.api_url,
            &pool,
            targets,
            options.offers(),
            END_TO_END_CONCURRENCY,
            Duration::from_secs(900),
        )
        .await
        {
            Ok(e2e) => {
                println!(
                    "end to end: accepted in {:.2} s, applied in {:.2} s ({:.0}/s)",
                    e2e.accept_seconds,
                    e2e.applied_seconds,
                    e2e.applied_per_second()
                );
                Some(e2e)
            }
            Err(error) => {
                eprintln!("end to end failed: {error:#}");
                None
            }
        };
    }
    let (api_rss, worker_rss) = system.peak_rss_kib();
    pool.close().await;
    system.stop().await;
    Ok(Report {
        machine,
        date,
        command: options.command(),
        level_seconds: duration.as_secs_f64(),
        levels,
        cpu,
        end_to_end: e2e,
        end_to_end_concurrency: END_TO_END_CONCURRENCY,
        api_peak_rss_kib: api_rss,
        worker_peak_rss_kib: worker_rss,
    })
}
