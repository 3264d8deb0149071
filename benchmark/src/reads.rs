//! The read side: `GET /books` and `GET /offers/{bookId}` measured beside
//! the same SQL run by `pgbench` with as many clients as the API has
//! concurrent requests, on a catalogue of each size in [`CATALOGUES`].
//!
//! For each size: a fresh database seeded by `marketplace seed`, vacuumed
//! and analysed; one `marketplace serve` on it; then, per route and
//! concurrency, the API (closed loop, `GET` over keep-alive connections) and
//! right after it `pgbench -n -M prepared -c C -j 2 -T secs -f script.sql`
//! whose script is the repository's own statement (the constants the API
//! runs) with `\set` random variables drawn from the same distribution.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use marketplace::store::postgres::{LIST_BOOKS_SQL, LIST_OFFERS_SQL};
use plotters::style::{Color, Palette, Palette99};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use tokio::process::Command;
use uuid::Uuid;

use crate::charts::{self, Chart, Series};
use crate::load::{closed_loop, http_client, LevelResult};
use crate::processes::{
    drop_database, free_port, marketplace_binary, seed, spawn, wait_ready, CpuMeter, CpuSource,
    POSTGRES_SERVER,
};
use crate::report::{micros, ratio_with};

/// Catalogue sizes, in books (two offers each).
pub const CATALOGUES: [i64; 2] = [10_000, 1_000_000];
/// Concurrency levels of the realistic routes.
pub const LEVELS: [usize; 4] = [1, 4, 16, 64];
/// Concurrency levels of the deep-page run (slow by construction).
pub const DEEP_LEVELS: [usize; 2] = [1, 16];
/// Books per page, as the mobile app asks.
pub const PAGE_SIZE: u32 = 50;
/// Pages a browsing user reaches: uniform over `1..=FIRST_PAGES`.
pub const FIRST_PAGES: u32 = 20;
/// Offers per seeded book.
const OFFERS_PER_BOOK: i64 = 2;

/// One measured route and how its requests are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Route {
    /// `GET /books?page=P&pageSize=50`, P uniform in 1..=20.
    FirstPages,
    /// `GET /offers/{bookId}`, the book uniform over the whole catalogue.
    Offers,
    /// `GET /books?page=P&pageSize=50`, P uniform over every page.
    AnyPage,
}

impl Route {
    /// Short label for tables and charts.
    pub fn label(self) -> &'static str {
        match self {
            Route::FirstPages => "GET /books (pages 1..20)",
            Route::Offers => "GET /offers/{bookId}",
            Route::AnyPage => "GET /books (any page)",
        }
    }

    fn pages(self, books: i64) -> u32 {
        match self {
            Route::AnyPage => {
                u32::try_from((books.max(1) + i64::from(PAGE_SIZE) - 1) / i64::from(PAGE_SIZE))
                    .unwrap_or(u32::MAX)
            }
            _ => FIRST_PAGES,
        }
    }

    /// The pgbench script: the API's statement with its parameters replaced
    /// by `\set` random variables. Offers find the book id from its number
    /// in `bench_book_ids` inside the same statement (one primary-key probe,
    /// no extra round trip), so both sides draw books uniformly.
    pub fn script(self, books: i64) -> String {
        match self {
            Route::FirstPages | Route::AnyPage => format!(
                "\\set page random(1, {pages})\n{sql};\n",
                pages = self.pages(books),
                sql = one_line(
                    &LIST_BOOKS_SQL
                        .replace("$1", &PAGE_SIZE.to_string())
                        .replace("$2", &format!("(:page - 1) * {PAGE_SIZE}"))
                ),
            ),
            Route::Offers => format!(
                "\\set n random(1, {books})\n{sql};\n",
                sql = one_line(
                    &LIST_OFFERS_SQL.replace("$1", "(SELECT id FROM bench_book_ids WHERE n = :n)")
                ),
            ),
        }
    }
}

/// pgbench reads one statement per line.
fn one_line(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// splitmix64: a tiny, good-enough generator so each task draws its own
/// uniform pages and books without a shared lock.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `1..=n`.
    fn between_1_and(&mut self, n: u64) -> u64 {
        1 + self.next() % n.max(1)
    }
}

/// API against pgbench at one concurrency.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The API.
    pub api: LevelResult,
    /// pgbench running the same statement.
    pub pgbench: LevelResult,
    /// Microseconds of CPU per request on the API side: the API process,
    /// the load generator, PostgreSQL.
    pub api_cpu: [Option<f64>; 3],
    /// Microseconds of CPU per transaction on pgbench's side: pgbench,
    /// PostgreSQL.
    pub pgbench_cpu: [Option<f64>; 2],
}

impl Pair {
    fn api_cpu_total(&self) -> f64 {
        self.api_cpu.iter().flatten().sum()
    }

    fn pgbench_cpu_total(&self) -> f64 {
        self.pgbench_cpu.iter().flatten().sum()
    }
}

/// One catalogue size and everything measured on it.
#[derive(Debug, Clone)]
pub struct CatalogueRun {
    /// Books in the catalogue.
    pub books: i64,
    /// Offers in the catalogue.
    pub offers: i64,
    /// Seconds `marketplace seed` took.
    pub seed_seconds: f64,
    /// Per route, per concurrency.
    pub routes: BTreeMap<Route, Vec<Pair>>,
}

/// Everything the read phase measured.
#[derive(Debug, Clone)]
pub struct ReadReport {
    /// Seconds each level ran, on each side.
    pub level_seconds: f64,
    /// Connections of the API's database pool.
    pub api_pool: u32,
    /// One entry per catalogue size.
    pub catalogues: Vec<CatalogueRun>,
}

/// How the read phase runs.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Seconds per level and side.
    pub level_duration: Duration,
    /// Connections of the API's database pool (`--db-max-connections`).
    pub api_pool: u32,
    /// One catalogue of this many books instead of [`CATALOGUES`].
    pub books: Option<i64>,
}

impl ReadOptions {
    fn sizes(self) -> Vec<i64> {
        match self.books {
            Some(books) => vec![books],
            None => CATALOGUES.to_vec(),
        }
    }
}

/// Finds `pgbench`: on `PATH`, else where Debian installs PostgreSQL 15.
fn pgbench_binary() -> PathBuf {
    let fallback = PathBuf::from("/usr/lib/postgresql/15/bin/pgbench");
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("pgbench"))
            .find(|candidate| candidate.is_file())
    });
    on_path.unwrap_or(fallback)
}

/// Runs the read phase on fresh databases named after `id`, and drops them
/// again whatever happens.
pub async fn run(options: ReadOptions, id: &str) -> Result<ReadReport> {
    let mut catalogues = Vec::new();
    for books in options.sizes() {
        let database = format!("bench_reads_{id}_{books}");
        let outcome = run_catalogue(options, &database, books).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Err(error) = drop_database(&database).await {
            eprintln!("cleanup: {error:#}");
        }
        catalogues.push(outcome?);
    }
    Ok(ReadReport {
        level_seconds: options.level_duration.as_secs_f64(),
        api_pool: options.api_pool,
        catalogues,
    })
}

/// Drops the databases of run `id`, if they exist.
pub async fn cleanup(options: ReadOptions, id: &str) {
    // Give killed processes a moment to close their connections.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for books in options.sizes() {
        if let Err(error) = drop_database(&format!("bench_reads_{id}_{books}")).await {
            eprintln!("cleanup: {error:#}");
        }
    }
}

async fn run_catalogue(options: ReadOptions, database: &str, books: i64) -> Result<CatalogueRun> {
    let binary = marketplace_binary()?;
    let url = format!("{POSTGRES_SERVER}/{database}");
    let log_dir = std::env::temp_dir().join(format!("marketplace-bench-{database}"));
    std::fs::create_dir_all(&log_dir).context("creating the log directory")?;

    println!("reads: seeding {books} books into {database}");
    let started = Instant::now();
    seed(database, books, OFFERS_PER_BOOK, &log_dir).await?;
    let seed_seconds = started.elapsed().as_secs_f64();

    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .context("connecting to the read database")?;
    let ids = prepare(&pool).await?;
    let offers: i64 = sqlx::query_scalar("SELECT count(*) FROM offers")
        .fetch_one(&pool)
        .await?;
    pool.close().await;

    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let api = spawn(
        &binary,
        &[
            "serve",
            "--listen",
            &listen,
            "--database-url",
            &url,
            "--db-max-connections",
            &options.api_pool.to_string(),
        ],
        &log_dir,
        "api",
    )?;
    let api_url = format!("http://{listen}");
    wait_ready(
        &http_client(2)?,
        &format!("{api_url}/health/ready"),
        Duration::from_secs(60),
    )
    .await?;

    let ids = Arc::new(ids);
    let duration = options.level_duration;
    let work_dir = log_dir.join("pgbench");
    std::fs::create_dir_all(&work_dir)?;
    let mut routes = BTreeMap::new();
    for route in [Route::FirstPages, Route::Offers, Route::AnyPage] {
        let script = work_dir.join(format!("{route:?}.sql"));
        std::fs::write(&script, route.script(books)).context("writing the pgbench script")?;
        // Warm both sides: the API's pool and statement caches, and the
        // pages of the tables the route touches.
        measure_api(&api_url, route, books, &ids, 4, Duration::from_secs(1)).await?;
        pgbench(database, &script, &work_dir, 4, Duration::from_secs(1)).await?;
        let levels: &[usize] = if route == Route::AnyPage {
            &DEEP_LEVELS
        } else {
            &LEVELS
        };
        let mut pairs = Vec::new();
        for &concurrency in levels {
            let meter = CpuMeter::start(vec![
                CpuSource::Process(api.id()),
                CpuSource::Process(Some(std::process::id())),
                CpuSource::PostgreSql,
            ]);
            let api_level =
                measure_api(&api_url, route, books, &ids, concurrency, duration).await?;
            let api_cpu = meter.per_message_us(api_level.ok);
            let meter = CpuMeter::start(vec![CpuSource::ExitedChildren, CpuSource::PostgreSql]);
            let pg = pgbench(database, &script, &work_dir, concurrency, duration).await?;
            let pgbench_cpu = meter.per_message_us(pg.ok);
            let api = &api_level;
            println!(
                "{books:>8} books  {:<26} c={concurrency:>3}  API {:>7.0}/s p50 {:>7.2} ms p99 {:>7.2} ms ({} errors) | pgbench {:>7.0}/s p50 {:>7.2} ms p99 {:>7.2} ms ({} errors) | API/pgbench {:.3}, p99 {:.3}",
                route.label(),
                api.per_second(),
                api.p50_ms,
                api.p99_ms,
                api.errors,
                pg.per_second(),
                pg.p50_ms,
                pg.p99_ms,
                pg.errors,
                api.per_second() / pg.per_second(),
                api.p99_ms / pg.p99_ms,
            );
            pairs.push(Pair {
                api: api_level,
                pgbench: pg,
                api_cpu: [api_cpu[0], api_cpu[1], api_cpu[2]],
                pgbench_cpu: [pgbench_cpu[0], pgbench_cpu[1]],
            });
        }
        routes.insert(route, pairs);
    }
    Ok(CatalogueRun {
        books,
        offers,
        seed_seconds,
        routes,
    })
}

/// Vacuums and analyses the seeded tables (as autovacuum would after a bulk
/// load, so index-only scans need no heap visits), numbers the books for
/// pgbench in `bench_book_ids`, and returns their ids in that order.
async fn prepare(pool: &PgPool) -> Result<Vec<Uuid>> {
    sqlx::query("VACUUM (ANALYZE) books, offers, users")
        .execute(pool)
        .await
        .context("vacuuming the catalogue")?;
    sqlx::query(
        "CREATE TABLE bench_book_ids AS
         SELECT row_number() OVER (ORDER BY created_at, id)::int AS n, id FROM books",
    )
    .execute(pool)
    .await
    .context("numbering the books")?;
    sqlx::query("ALTER TABLE bench_book_ids ADD PRIMARY KEY (n)")
        .execute(pool)
        .await?;
    sqlx::query("VACUUM (ANALYZE) bench_book_ids")
        .execute(pool)
        .await?;
    let ids = sqlx::query_scalar("SELECT id FROM bench_book_ids ORDER BY n")
        .fetch_all(pool)
        .await
        .context("loading the book ids")?;
    Ok(ids)
}

async fn measure_api(
    api_url: &str,
    route: Route,
    books: i64,
    ids: &Arc<Vec<Uuid>>,
    concurrency: usize,
    duration: Duration,
) -> Result<LevelResult> {
    let client = http_client(concurrency)?;
    let base = api_url.to_owned();
    let ids = Arc::clone(ids);
    let pages = u64::from(route.pages(books));
    let salt = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    Ok(closed_loop(concurrency, duration, move |task, sequence| {
        let mut rng = Rng(salt ^ ((task as u64) << 40) ^ sequence);
        let url = match route {
            Route::Offers => {
                let n = rng.between_1_and(ids.len() as u64) as usize;
                format!("{base}/offers/{}", ids[n - 1])
            }
            Route::FirstPages | Route::AnyPage => {
                let page = rng.between_1_and(pages);
                format!("{base}/books?page={page}&pageSize={PAGE_SIZE}")
            }
        };
        let client = client.clone();
        async move {
            let response = client.get(&url).send().await?;
            if !response.status().is_success() {
                bail!("GET {url} answered {}", response.status());
            }
            response.bytes().await?;
            Ok(())
        }
    })
    .await)
}

/// Runs pgbench with `clients` clients for `duration` and reads its rate
/// (`tps`, without connection time) and, from `--log` (one line per
/// transaction), the p50 and p99 latency of its transactions.
async fn pgbench(
    database: &str,
    script: &Path,
    work_dir: &Path,
    clients: usize,
    duration: Duration,
) -> Result<LevelResult> {
    // PostgreSQL's connection limit is shared with whatever else runs on
    // the server: when it is reached, wait for connections to be released.
    let mut attempt = 0;
    loop {
        match pgbench_once(database, script, work_dir, clients, duration).await {
            Err(error) if attempt < 30 && format!("{error:#}").contains("too many clients") => {
                attempt += 1;
                eprintln!("pgbench: PostgreSQL has no connection left for {clients} clients; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            outcome => return outcome,
        }
    }
}

async fn pgbench_once(
    database: &str,
    script: &Path,
    work_dir: &Path,
    clients: usize,
    duration: Duration,
) -> Result<LevelResult> {
    let prefix = format!("c{clients}_{}", Uuid::new_v4().simple());
    let threads = clients.min(2);
    let output = Command::new(pgbench_binary())
        .current_dir(work_dir)
        // The API's driver speaks plain TCP to PostgreSQL (sqlx is built
        // without TLS); libpq would negotiate TLS when the server offers it.
        .env("PGSSLMODE", "disable")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
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
            "-f",
        ])
        .arg(script)
        .arg(database)
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
    let tps = stdout
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse::<f64>().ok())
        .context("no tps in pgbench's output")?;
    let failed = stdout
        .lines()
        .find_map(|line| line.strip_prefix("number of failed transactions: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse::<u64>().ok())
        .unwrap_or(0);
    let mut latencies = Vec::new();
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
        latencies.extend(
            log.lines()
                .filter_map(|line| line.split_whitespace().nth(2))
                .filter_map(|time| time.parse::<u64>().ok()),
        );
        std::fs::remove_file(&path)?;
    }
    if latencies.is_empty() {
        bail!("pgbench wrote no transaction log");
    }
    latencies.sort_unstable();
    let ok = latencies.len() as u64;
    Ok(LevelResult {
        concurrency: clients,
        ok,
        errors: failed,
        seconds: ok as f64 / tps,
        p50_ms: quantile_ms(&latencies, 0.50),
        p99_ms: quantile_ms(&latencies, 0.99),
    })
}

fn quantile_ms(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[index.min(sorted.len() - 1)] as f64 / 1000.0
}

fn ratio(a: f64, b: f64) -> String {
    ratio_with(a, b, 2)
}

fn books_label(books: i64) -> String {
    match books {
        b if b >= 1_000_000 && b % 1_000_000 == 0 => format!("{}M", b / 1_000_000),
        b if b >= 1_000 && b % 1_000 == 0 => format!("{}k", b / 1_000),
        b => b.to_string(),
    }
}

/// The p99 target at 64 connections, in milliseconds.
const P99_TARGET_MS: f64 = 10.0;
/// The rate target, as a fraction of pgbench's.
const RATE_TARGET: f64 = 0.70;
/// The growth target: p99 at the largest catalogue over p99 at the smallest.
const GROWTH_TARGET: f64 = 1.5;

impl ReadReport {
    fn find(&self, books: i64, route: Route, concurrency: usize) -> Option<&Pair> {
        self.catalogues
            .iter()
            .find(|c| c.books == books)?
            .routes
            .get(&route)?
            .iter()
            .find(|p| p.api.concurrency == concurrency)
    }

    /// The tables, Markdown (also readable as plain text).
    pub fn tables(&self) -> String {
        let mut out = String::new();
        for catalogue in &self.catalogues {
            let _ = writeln!(
                out,
                "### {} books, {} offers (seeded in {:.1} s), {:.0} s per level and side\n",
                catalogue.books, catalogue.offers, catalogue.seed_seconds, self.level_seconds
            );
            let _ = writeln!(
                out,
                "| route | concurrency | API req/s | pgbench tps | API/pgbench | API p50 ms | pgbench p50 ms | API p99 ms | pgbench p99 ms | p99 API/pgbench | API errors | pgbench failed |"
            );
            let _ = writeln!(
                out,
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for (route, pairs) in &catalogue.routes {
                for Pair { api, pgbench, .. } in pairs {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
                        route.label(),
                        api.concurrency,
                        api.per_second(),
                        pgbench.per_second(),
                        ratio(api.per_second(), pgbench.per_second()),
                        api.p50_ms,
                        pgbench.p50_ms,
                        api.p99_ms,
                        pgbench.p99_ms,
                        ratio(api.p99_ms, pgbench.p99_ms),
                        api.errors,
                        pgbench.errors,
                    );
                }
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(
            out,
            "### CPU per request (µs), by process, during each level\n\nPostgreSQL counts every `postgres` process, with the backends that exited meanwhile.\n"
        );
        let _ = writeln!(
            out,
            "| books | route | concurrency | API: API process | API: load generator | API: PostgreSQL | API: total | pgbench: pgbench | pgbench: PostgreSQL | pgbench: total | total API/pgbench |"
        );
        let _ = writeln!(
            out,
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for catalogue in &self.catalogues {
            for (route, pairs) in &catalogue.routes {
                for pair in pairs {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {:.0} | {} |",
                        books_label(catalogue.books),
                        route.label(),
                        pair.api.concurrency,
                        micros(pair.api_cpu[0]),
                        micros(pair.api_cpu[1]),
                        micros(pair.api_cpu[2]),
                        pair.api_cpu_total(),
                        micros(pair.pgbench_cpu[0]),
                        micros(pair.pgbench_cpu[1]),
                        pair.pgbench_cpu_total(),
                        ratio(pair.api_cpu_total(), pair.pgbench_cpu_total()),
                    );
                }
            }
        }
        let _ = writeln!(out);
        if let (Some(small), Some(large)) = (self.catalogues.first(), self.catalogues.last()) {
            if small.books != large.books {
                let _ = writeln!(
                    out,
                    "### Growth of the API's latency from {} to {} books\n",
                    books_label(small.books),
                    books_label(large.books)
                );
                let _ = writeln!(
                    out,
                    "| route | concurrency | p50 ms at {s} | p50 ms at {l} | p50 {l}/{s} | p99 ms at {s} | p99 ms at {l} | p99 {l}/{s} | req/s {l}/{s} |",
                    s = books_label(small.books),
                    l = books_label(large.books)
                );
                let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
                for (route, pairs) in &small.routes {
                    for Pair { api: a, .. } in pairs {
                        let Some(b) = self.find(large.books, *route, a.concurrency) else {
                            continue;
                        };
                        let b = &b.api;
                        let _ = writeln!(
                            out,
                            "| {} | {} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {} | {} |",
                            route.label(),
                            a.concurrency,
                            a.p50_ms,
                            b.p50_ms,
                            ratio(b.p50_ms, a.p50_ms),
                            a.p99_ms,
                            b.p99_ms,
                            ratio(b.p99_ms, a.p99_ms),
                            ratio(b.per_second(), a.per_second()),
                        );
                    }
                }
                let _ = writeln!(out);
            }
        }
        out
    }

    /// Each target, met or not, from the figures.
    pub fn targets(&self) -> String {
        let mut out = String::new();
        let realistic = [Route::FirstPages, Route::Offers];
        let mut below = Vec::new();
        let mut count = 0;
        for catalogue in &self.catalogues {
            for route in realistic {
                for pair in catalogue.routes.get(&route).into_iter().flatten() {
                    count += 1;
                    let r = pair.api.per_second() / pair.pgbench.per_second();
                    if r.is_nan() || r < RATE_TARGET {
                        below.push(format!(
                            "{} at {} books, concurrency {} ({r:.2})",
                            route.label(),
                            books_label(catalogue.books),
                            pair.api.concurrency
                        ));
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "- rate >= {:.0}% of pgbench's for the same SQL: {} of {count} measurements{}",
            RATE_TARGET * 100.0,
            count - below.len(),
            if below.is_empty() {
                String::new()
            } else {
                format!("; below: {}", below.join(", "))
            }
        );
        let at_64: Vec<(i64, Route, &Pair)> = self
            .catalogues
            .iter()
            .flat_map(|catalogue| realistic.map(|route| (catalogue.books, route)))
            .filter_map(|(books, route)| Some((books, route, self.find(books, route, 64)?)))
            .collect();
        for &(books, route, pair) in &at_64 {
            let _ = writeln!(
                        out,
                        "  Bound, {} at {} books, concurrency 64: the API side used {:.0} µs of CPU per request (API process {}, load generator {}, PostgreSQL {}), pgbench's side {:.0} µs per transaction (pgbench {}, PostgreSQL {}); on CPUs all processes share and saturate, the rate ratio is at most about the inverse, {}; measured {}.",
                        route.label(),
                        books_label(books),
                        pair.api_cpu_total(),
                        micros(pair.api_cpu[0]),
                        micros(pair.api_cpu[1]),
                        micros(pair.api_cpu[2]),
                        pair.pgbench_cpu_total(),
                        micros(pair.pgbench_cpu[0]),
                        micros(pair.pgbench_cpu[1]),
                        ratio(pair.pgbench_cpu_total(), pair.api_cpu_total()),
                        ratio(pair.api.per_second(), pair.pgbench.per_second()),
                    );
        }
        for &(books, route, pair) in &at_64 {
            // Closed loop: 64 requests always in flight, so the mean
            // latency is 64 / rate (Little's law), whatever the code.
            let _ = writeln!(
                        out,
                        "- p99 < {P99_TARGET_MS:.0} ms at 64 connections, {} at {} books: {:.2} ms, {} (pgbench {:.2} ms; mean latency = 64 / rate = {:.2} ms for the API, {:.2} ms for pgbench)",
                        route.label(),
                        books_label(books),
                        pair.api.p99_ms,
                        if pair.api.p99_ms < P99_TARGET_MS { "met" } else { "not met" },
                        pair.pgbench.p99_ms,
                        64_000.0 / pair.api.per_second(),
                        64_000.0 / pair.pgbench.per_second(),
                    );
        }
        if let (Some(small), Some(large)) = (self.catalogues.first(), self.catalogues.last()) {
            for route in realistic {
                for concurrency in LEVELS {
                    let (Some(a), Some(b)) = (
                        self.find(small.books, route, concurrency),
                        self.find(large.books, route, concurrency),
                    ) else {
                        continue;
                    };
                    let growth = b.api.p99_ms / a.api.p99_ms;
                    if concurrency == 64 || growth > GROWTH_TARGET {
                        let _ = writeln!(
                            out,
                            "- p99 at {} books within {GROWTH_TARGET}x of {} books, {} at concurrency {concurrency}: {growth:.2}x, {} (p50 {:.2}x)",
                            books_label(large.books),
                            books_label(small.books),
                            route.label(),
                            if growth <= GROWTH_TARGET { "met" } else { "not met" },
                            b.api.p50_ms / a.api.p50_ms,
                        );
                    }
                }
            }
        }
        out
    }

    /// The section of `docs/performance.md`, under a level-2 heading.
    pub fn markdown(&self, command: &str, charts: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "## Reads: `GET /books` and `GET /offers/{{bookId}}` beside pgbench\n"
        );
        let _ = writeln!(
            out,
            "Produced by the same program (`{command}`); figures written by it, not edited by hand."
        );
        let _ = writeln!(
            out,
            "\n- system under test: `marketplace serve --database-url postgres://... --db-max-connections {}` \
             (release build, `RUST_LOG=warn`, default bus; reads do not touch the bus) on a fresh database per \
             catalogue, seeded by `marketplace seed --books N --offers-per-book {OFFERS_PER_BOOK}`, then \
             `VACUUM (ANALYZE)` as autovacuum does after a bulk load.",
            self.api_pool
        );
        let _ = writeln!(
            out,
            "- the reference: `pgbench -n -M prepared -c C -j 2 -T {:.0} -f script.sql` (`-j 1` at one client) with \
             as many clients as the API has concurrent requests, right after the API's level, on the same database, \
             over plain TCP like the API's driver (`PGSSLMODE=disable`). \
             The script is the statement the API runs (the constants `LIST_BOOKS_SQL` and `LIST_OFFERS_SQL` of \
             `marketplace::store::postgres`) with `\\set` random parameters; pgbench's rate is its `tps` \
             (without connection time) and its p50 and p99 come from `--log`, one line per transaction (latency \
             seen by the pgbench client, round trip included).",
            self.level_seconds
        );
        let _ = writeln!(
            out,
            "- distribution: `GET /books?page=P&pageSize={PAGE_SIZE}` with P uniform in 1..={FIRST_PAGES} (a mobile \
             user browses the first pages), `GET /offers/{{bookId}}` with the book uniform over the whole catalogue \
             (the API side takes ids from a list, pgbench finds the id of book number `random(1, N)` through \
             `bench_book_ids`' primary key inside the same statement: one index probe more on its side, no extra \
             round trip). Deep pages (P uniform over every page) are measured separately at concurrency {}.",
            DEEP_LEVELS
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        );
        let _ = writeln!(
            out,
            "- the load generator, the API, PostgreSQL and pgbench share the machine's CPUs; the API side's \
             client (reqwest, closed loop, keep-alive) costs CPU that pgbench's C client does not, so ratios \
             are a lower bound of the API's efficiency.\n"
        );
        out.push_str(&self.tables());
        if charts {
            let _ = writeln!(
                out,
                "![read throughput](performance-reads-throughput.png)\n"
            );
            let _ = writeln!(out, "![read p99 latency](performance-reads-p99.png)\n");
        }
        let _ = writeln!(out, "### Targets\n");
        out.push_str(&self.targets());
        let _ = writeln!(out, "\n### Notes\n");
        let _ = writeln!(
            out,
            "- `GET /books` pages with `OFFSET`: the page's position is found by counting the skipped rows. The \
             statement counts them on the narrow `books_listing (created_at, id)` index alone (an index-only scan, \
             no heap visit per skipped row) and reads only the page's rows from the table, so the first pages cost \
             the same at any catalogue size, and a deep page costs one index entry per skipped book: that is what \
             bounds the \"any page\" rows above. Keyset pagination would make every page O(page size) but needs a \
             cursor in the request, which `page`/`pageSize` clients do not send."
        );
        let _ = writeln!(
            out,
            "- With 64 requests in flight in a closed loop the mean latency is 64 / rate (Little's law): a p99 under \
             {P99_TARGET_MS:.0} ms at 64 connections needs well over 6,400 requests per second, which on a machine \
             where client, API and PostgreSQL share {} CPUs the same SQL alone (pgbench) may not reach either; \
             compare the API's p99 with pgbench's on the same line.",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        );
        let _ = writeln!(
            out,
            "- Against pgbench the API pays for one more hop per request: the client's HTTP request, the API \
             process waking up, its query to PostgreSQL, and the JSON answer (about 8 KB for a page of 50 books), \
             where pgbench sends the statement straight to PostgreSQL from a C client; on loopback most of that \
             hop is kernel time (socket writes and wake-ups), the rest is decoding rows and writing JSON."
        );
        let _ = writeln!(
            out,
            "- `GET /offers/{{bookId}}` is one descent of `offers_by_book_price (book_id, price, id)`, already in \
             the answer's order, and one primary-key probe of `users` per offer; its cost grows with the depth of \
             those indexes (logarithmically) and with how much of them stays in memory."
        );
        out
    }

    /// Writes `performance-reads-throughput.png` and `performance-reads-p99.png`.
    pub fn charts(&self, dir: &Path) -> Result<()> {
        let mut rate = Vec::new();
        let mut p99 = Vec::new();
        for catalogue in &self.catalogues {
            for route in [Route::FirstPages, Route::Offers] {
                let Some(pairs) = catalogue.routes.get(&route) else {
                    continue;
                };
                for (side, pick) in [
                    ("API", (|p: &Pair| p.api) as fn(&Pair) -> LevelResult),
                    ("pgbench", |p: &Pair| p.pgbench),
                ] {
                    // The API and pgbench on the same route and catalogue
                    // share a colour; pgbench is the thin line.
                    let color = Palette99::pick(rate.len() / 2 * 2).to_rgba();
                    let line = |value: fn(&LevelResult) -> f64| Series {
                        label: format!(
                            "{} {side}, {}",
                            route.label(),
                            books_label(catalogue.books)
                        ),
                        points: pairs
                            .iter()
                            .map(|p| (pick(p).concurrency, value(&pick(p))))
                            .collect(),
                        color,
                        thin: side == "pgbench",
                    };
                    rate.push(line(LevelResult::per_second));
                    p99.push(line(|level| level.p99_ms));
                }
            }
        }
        let chart = |title, y_label| Chart {
            title,
            x_label: "concurrency (API requests in flight = pgbench clients)",
            y_label,
            size: (1000, 600),
        };
        charts::draw(
            &dir.join("performance-reads-throughput.png"),
            &chart(
                "Reads: requests per second vs concurrency",
                "requests (transactions) per second",
            ),
            &rate,
        )?;
        charts::draw(
            &dir.join("performance-reads-p99.png"),
            &chart("Reads: p99 latency vs concurrency", "p99 latency (ms)"),
            &p99,
        )
    }
}
