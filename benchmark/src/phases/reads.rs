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
//!
//! Beside the catalogue's pages: searches (`GET /books?q=`) for a surname
//! and for a surname with a title noun, words drawn uniformly from the
//! seed's vocabulary ([`marketplace::seed::words`]); and one deep page, at
//! [`DEEP_FRACTION`] of the catalogue, reached by cursor (`after=`, a
//! keyset range) and by page number (`OFFSET`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use marketplace::http::paging;
use marketplace::model::BookKey;
use marketplace::seed::words;
use marketplace::store::postgres::{
    BOOKS_AFTER_SQL, LIST_BOOKS_SQL, LIST_OFFERS_SQL, SEARCH_BOOKS_SQL,
};
use serde::Serialize;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

use crate::cpu::{CpuMeter, CpuPerMessage, CpuSource};
use crate::load::{closed_loop, http_client, open_loop};
use crate::pgbench;
use crate::processes::{drop_database, free_port, seed, start, Services};
use crate::stats::LevelResult;

/// Catalogue sizes, in books (two offers each).
pub(crate) const CATALOGUES: [i64; 2] = [10_000, 1_000_000];
/// Offered rates of `GET /books` (pages 1..20), as fractions of the API's
/// highest closed-loop rate on that route.
pub(crate) const RATE_FRACTIONS: [f64; 3] = [0.25, 0.50, 0.75];
/// pgbench clients (and idle HTTP connections kept) at an offered rate:
/// enough that a scheduled transaction seldom waits for a free client.
const RATE_CLIENTS: usize = 64;
/// Concurrency levels of the realistic routes.
pub(crate) const LEVELS: [usize; 4] = [1, 4, 16, 64];
/// Concurrency levels of the deep-page run (slow by construction).
pub(crate) const DEEP_LEVELS: [usize; 2] = [1, 16];
/// Books per page, as the mobile app asks.
pub(crate) const PAGE_SIZE: u32 = 50;
/// Rows the API asks for a page of books: the page, plus the one row that
/// tells whether another page follows.
const PAGE_ROWS: u32 = PAGE_SIZE + 1;
/// Pages a browsing user reaches: uniform over `1..=FIRST_PAGES`.
pub(crate) const FIRST_PAGES: u32 = 20;
/// Offers per seeded book.
pub(crate) const OFFERS_PER_BOOK: i64 = 2;

/// How deep in the catalogue the deep page starts, as a fraction of its
/// books.
pub(crate) const DEEP_FRACTION: f64 = 0.9;

/// The routes measured, in this order.
const ROUTES: [Route; 7] = [
    Route::FirstPages,
    Route::Offers,
    Route::AnyPage,
    Route::SearchSurname,
    Route::SearchSurnameNoun,
    Route::DeepCursor,
    Route::DeepOffset,
];

/// One measured route and how its requests are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum Route {
    /// `GET /books?page=P&pageSize=50`, P uniform in 1..=20.
    FirstPages,
    /// `GET /offers/{bookId}`, the book uniform over the whole catalogue.
    Offers,
    /// `GET /books?page=P&pageSize=50`, P uniform over every page.
    AnyPage,
    /// `GET /books?q=S&pageSize=50`, S a surname of the seed's vocabulary,
    /// uniform.
    SearchSurname,
    /// `GET /books?q=S N&pageSize=50`, S a surname and N a title noun of
    /// the seed's vocabulary, each uniform.
    SearchSurnameNoun,
    /// `GET /books?after=C&pageSize=50`, C the cursor of the book at
    /// [`DEEP_FRACTION`] of the catalogue.
    DeepCursor,
    /// `GET /books?page=P&pageSize=50`, P the page that starts right after
    /// the same book: the same rows as [`Route::DeepCursor`], by `OFFSET`.
    DeepOffset,
}

impl Route {
    /// Short label for tables and charts.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Route::FirstPages => "GET /books (pages 1..20)",
            Route::Offers => "GET /offers/{bookId}",
            Route::AnyPage => "GET /books (any page)",
            Route::SearchSurname => "GET /books?q=surname",
            Route::SearchSurnameNoun => "GET /books?q=surname+noun",
            Route::DeepCursor => "GET /books?after= (90%)",
            Route::DeepOffset => "GET /books?page= (90%)",
        }
    }

    /// Whether the route is measured at [`DEEP_LEVELS`] only (slow by
    /// construction, or only there for contrast).
    pub(crate) fn is_deep(self) -> bool {
        matches!(self, Route::AnyPage | Route::DeepCursor | Route::DeepOffset)
    }

    /// Whether the route is a search.
    pub(crate) fn is_search(self) -> bool {
        matches!(self, Route::SearchSurname | Route::SearchSurnameNoun)
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
    pub(crate) fn script(self, books: i64, deep: &DeepRow) -> String {
        match self {
            Route::SearchSurname | Route::SearchSurnameNoun => {
                let surname = sql_words(&words::SURNAMES, ":s");
                let (words, set) = if self == Route::SearchSurname {
                    (format!("ARRAY[{surname}]"), String::new())
                } else {
                    (
                        format!("ARRAY[{surname}, {}]", sql_words(&words::NOUNS, ":w")),
                        format!("\\set w random(1, {})\n", words::NOUNS.len()),
                    )
                };
                format!(
                    "\\set s random(1, {surnames})\n{set}{sql};\n",
                    surnames = words::SURNAMES.len(),
                    sql = one_line(&search_sql(&words, &PAGE_ROWS.to_string(), "0")),
                )
            }
            Route::DeepCursor => format!(
                "{};\n",
                one_line(&after_sql(
                    &format!("'{}'::timestamptz", deep.created_at),
                    &format!("'{}'::uuid", deep.id),
                    &PAGE_ROWS.to_string(),
                ))
            ),
            Route::DeepOffset => format!(
                "{};\n",
                one_line(
                    &LIST_BOOKS_SQL
                        .replace("$1", &PAGE_ROWS.to_string())
                        .replace("$2", &deep.n.to_string())
                )
            ),
            Route::FirstPages | Route::AnyPage => format!(
                "\\set page random(1, {pages})\n{sql};\n",
                pages = self.pages(books),
                sql = one_line(
                    &LIST_BOOKS_SQL
                        .replace("$1", &PAGE_ROWS.to_string())
                        .replace("$2", &format!("(:page - 1) * {PAGE_SIZE}"))
                ),
            ),
            Route::Offers => format!(
                "\\set n random(1, {books})\n{sql};\n",
                // `$2`: the API's default page of 100 offers, plus the one
                // row that tells whether another page follows.
                sql = one_line(
                    &LIST_OFFERS_SQL
                        .replace("$1", "(SELECT id FROM bench_book_ids WHERE n = :n)")
                        .replace("$2", "101")
                ),
            ),
        }
    }
}

/// `words[i]` in SQL for the pgbench variable `i` (counted from 1): an
/// element of a constant array, folded once per statement.
fn sql_words(words: &[&str], i: &str) -> String {
    format!("('{{{}}}'::text[])[{i}]", words.join(","))
}

/// The API's search statement with its parameters replaced by the SQL
/// expressions `words` (the search's words, a `text[]`), `limit` and
/// `offset`.
fn search_sql(words: &str, limit: &str, offset: &str) -> String {
    SEARCH_BOOKS_SQL
        .replace("$1", words)
        .replace("$2", limit)
        .replace("$3", offset)
}

/// The API's cursor-page statement with its parameters replaced by the SQL
/// expressions of the last row's key (`created_at`, `id`) and `limit`.
fn after_sql(created_at: &str, id: &str, limit: &str) -> String {
    BOOKS_AFTER_SQL
        .replace("$1", created_at)
        .replace("$2", id)
        .replace("$3", limit)
}

/// The book the deep pages start after: number `n` in the catalogue's
/// order (`created_at, id`), at [`DEEP_FRACTION`], rounded down to a whole
/// number of pages so that the page-number page holds the same rows.
#[derive(Debug, Clone)]
pub(crate) struct DeepRow {
    pub(crate) n: i64,
    /// `created_at` as PostgreSQL prints a `timestamptz` (UTC), exact to
    /// the microsecond.
    pub(crate) created_at: String,
    pub(crate) id: Uuid,
    /// The `after` cursor the API hands out for that book.
    pub(crate) cursor: String,
}

impl DeepRow {
    /// The book number the deep pages start after, in a catalogue of
    /// `books` books.
    fn position(books: i64) -> i64 {
        let n = (books as f64 * DEEP_FRACTION) as i64;
        n - n % i64::from(PAGE_SIZE)
    }

    /// The page number whose first row follows book `n`.
    fn page(&self) -> i64 {
        self.n / i64::from(PAGE_SIZE) + 1
    }
}

/// The query string value of each word, percent-encoded once.
#[derive(Debug)]
struct Vocabulary {
    surnames: Vec<String>,
    nouns: Vec<String>,
}

impl Vocabulary {
    fn new() -> Self {
        let encode = |words: &[&str]| words.iter().map(|w| encode_query(w)).collect();
        Self {
            surnames: encode(&words::SURNAMES),
            nouns: encode(&words::NOUNS),
        }
    }
}

/// `value` percent-encoded as a query string value
/// (`application/x-www-form-urlencoded`: UTF-8 bytes, space as `+`).
fn encode_query(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// The `after` cursor the API hands out for the book registered at `at`
/// with id `id`: its registration key, as `GET /books?after=` pages.
fn book_cursor(at: chrono::DateTime<chrono::Utc>, id: Uuid) -> String {
    paging::encode(&BookKey::Registered(at.timestamp_micros(), id))
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
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Pair {
    pub(crate) api: LevelResult,
    /// pgbench running the same statement.
    pub(crate) pgbench: LevelResult,
    /// CPU per request on the API side: the `api` process, the load
    /// `generator`, `postgres`.
    pub(crate) api_cpu: CpuPerMessage,
    /// CPU per transaction on pgbench's side: `pgbench`, `postgres`.
    pub(crate) pgbench_cpu: CpuPerMessage,
}

/// One route on one catalogue, per concurrency.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RouteRun {
    pub(crate) route: Route,
    pub(crate) label: &'static str,
    pub(crate) pairs: Vec<Pair>,
}

/// One catalogue size and everything measured on it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CatalogueRun {
    pub(crate) books: i64,
    pub(crate) offers: i64,
    /// Seconds `marketplace seed` took.
    pub(crate) seed_seconds: f64,
    /// Per route, in the order of [`ROUTES`].
    pub(crate) routes: Vec<RouteRun>,
    /// `GET /books` (pages 1..20) at fixed offered rates.
    pub(crate) rates: Vec<RatePair>,
}

/// API against pgbench `--rate` at one offered rate of `GET /books` (pages
/// 1..20), both open loop.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct RatePair {
    /// Fraction of the API's highest closed-loop rate on the route.
    pub(crate) fraction: f64,
    /// Requests (transactions) started per second.
    pub(crate) offered: f64,
    /// `concurrency`: the most requests in flight at once.
    pub(crate) api: LevelResult,
    /// `concurrency`: pgbench's clients.
    pub(crate) pgbench: LevelResult,
}

/// Everything the read phase measured.
#[derive(Debug, Clone)]
pub(crate) struct ReadReport {
    /// Seconds each level ran, on each side.
    pub(crate) level_seconds: f64,
    /// Connections of the API's database pool.
    pub(crate) api_pool: u32,
    pub(crate) catalogues: Vec<CatalogueRun>,
}

impl ReadReport {
    /// The pair measured on `route` at `concurrency` on the catalogue of
    /// `books` books.
    pub(crate) fn find(&self, books: i64, route: Route, concurrency: usize) -> Option<&Pair> {
        self.catalogues
            .iter()
            .find(|c| c.books == books)?
            .routes
            .iter()
            .find(|r| r.route == route)?
            .pairs
            .iter()
            .find(|p| p.api.concurrency == concurrency)
    }
}

/// How the read phase runs.
#[derive(Debug, Clone)]
pub(crate) struct ReadOptions {
    pub(crate) level_duration: Duration,
    /// Connections of the API's database pool (`--db-max-connections`).
    pub(crate) api_pool: u32,
    /// One catalogue of this many books instead of [`CATALOGUES`].
    pub(crate) books: Option<i64>,
    pub(crate) services: Services,
    pub(crate) pgbench: PathBuf,
}

impl ReadOptions {
    fn sizes(&self) -> Vec<i64> {
        match self.books {
            Some(books) => vec![books],
            None => CATALOGUES.to_vec(),
        }
    }
}

/// Runs the read phase on fresh databases named after `id`, and drops them
/// again whatever happens.
pub(crate) async fn run(options: &ReadOptions, id: &str) -> Result<ReadReport> {
    let mut catalogues = Vec::new();
    for books in options.sizes() {
        let database = format!("bench_reads_{id}_{books}");
        let outcome = run_catalogue(options, &database, books).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Err(error) = drop_database(&options.services, &database).await {
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
pub(crate) async fn cleanup(options: &ReadOptions, id: &str) {
    // Give killed processes a moment to close their connections.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for books in options.sizes() {
        if let Err(error) =
            drop_database(&options.services, &format!("bench_reads_{id}_{books}")).await
        {
            eprintln!("cleanup: {error:#}");
        }
    }
}

async fn run_catalogue(options: &ReadOptions, database: &str, books: i64) -> Result<CatalogueRun> {
    let url = options.services.database_url(database);
    let log_dir = std::env::temp_dir().join(format!("marketplace-bench-{database}"));
    std::fs::create_dir_all(&log_dir).context("creating the log directory")?;

    println!("reads: seeding {books} books into {database}");
    let started = Instant::now();
    seed(
        &options.services,
        database,
        books,
        OFFERS_PER_BOOK,
        &log_dir,
    )
    .await?;
    let seed_seconds = started.elapsed().as_secs_f64();

    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .context("connecting to the read database")?;
    let ids = prepare(&pool).await?;
    let deep = deep_row(&pool, books).await?;
    let offers: i64 = sqlx::query_scalar("SELECT count(*) FROM offers")
        .fetch_one(&pool)
        .await?;
    pool.close().await;

    let listen = format!("127.0.0.1:{}", free_port()?);
    let pool_size = options.api_pool.to_string();
    // No rate limit: the load comes from one address (127.0.0.1).
    let args = [
        "serve",
        "--listen",
        &listen,
        "--database-url",
        &url,
        "--rate-limit-per-second",
        "0",
    ];
    let args = [&args[..], &["--db-max-connections", &pool_size]].concat();
    let api = start(&http_client(2)?, &args, &log_dir, "api", &listen).await?;
    let requests = Arc::new(Requests {
        base: format!("http://{listen}"),
        books,
        ids,
        vocabulary: Vocabulary::new(),
        deep,
    });
    let duration = options.level_duration;
    let work_dir = log_dir.join("pgbench");
    std::fs::create_dir_all(&work_dir)?;
    let mut routes = Vec::new();
    let mut rates = Vec::new();
    for route in ROUTES {
        let script = work_dir.join(format!("{route:?}.sql"));
        std::fs::write(&script, route.script(books, &requests.deep))
            .context("writing the pgbench script")?;
        check(&requests, route).await?;
        // Warm both sides: the API's pool and statement caches, and the
        // pages of the tables the route touches.
        measure_api(&requests, route, 4, Duration::from_secs(1)).await?;
        let reference = |clients, duration| {
            pgbench::run(
                &options.pgbench,
                &url,
                &script,
                &work_dir,
                clients,
                duration,
                None,
            )
        };
        reference(4, Duration::from_secs(1)).await?;
        let levels: &[usize] = if route.is_deep() {
            &DEEP_LEVELS
        } else {
            &LEVELS
        };
        let mut pairs = Vec::new();
        for &concurrency in levels {
            let meter = CpuMeter::start(vec![
                ("api", CpuSource::Process(api.id())),
                ("generator", CpuSource::Process(Some(std::process::id()))),
                ("postgres", CpuSource::PostgreSql),
            ]);
            let api_level = measure_api(&requests, route, concurrency, duration).await?;
            let api_cpu = meter.per_message_us(api_level.ok);
            let meter = CpuMeter::start(vec![
                ("pgbench", CpuSource::ExitedChildren),
                ("postgres", CpuSource::PostgreSql),
            ]);
            let pg = reference(concurrency, duration).await?;
            let pgbench_cpu = meter.per_message_us(pg.ok);
            let api = &api_level;
            println!(
                "{books:>8} books  {:<26} c={concurrency:>3}  API {:>7.0}/s p50 {:>7.2} ms p99 {:>7.2} ms ({} errors) | pgbench {:>7.0}/s p50 {:>7.2} ms p99 {:>7.2} ms ({} errors) | API/pgbench {:.3}, p99 {:.3}",
                route.label(),
                api.rate,
                api.p50_ms,
                api.p99_ms,
                api.errors,
                pg.rate,
                pg.p50_ms,
                pg.p99_ms,
                pg.errors,
                api.rate / pg.rate,
                api.p99_ms / pg.p99_ms,
            );
            pairs.push(Pair {
                api: api_level,
                pgbench: pg,
                api_cpu,
                pgbench_cpu,
            });
        }
        if route == Route::FirstPages {
            let max = pairs.iter().map(|pair| pair.api.rate).fold(0.0, f64::max);
            for fraction in RATE_FRACTIONS {
                let offered = (max * fraction).max(1.0);
                let api = open_loop_api(&requests, route, offered, duration).await?;
                let pgbench = pgbench::run(
                    &options.pgbench,
                    &url,
                    &script,
                    &work_dir,
                    RATE_CLIENTS,
                    duration,
                    Some(offered),
                )
                .await?;
                println!(
                    "{books:>8} books  {:<26} offered {offered:>6.0}/s ({:.0}% of max)  API p50 {:>7.2} ms p99 {:>7.2} ms ({} errors, {} in flight at most) | pgbench p50 {:>7.2} ms p99 {:>7.2} ms | p99 API/pgbench {:.3}",
                    route.label(),
                    fraction * 100.0,
                    api.p50_ms,
                    api.p99_ms,
                    api.errors,
                    api.concurrency,
                    pgbench.p50_ms,
                    pgbench.p99_ms,
                    api.p99_ms / pgbench.p99_ms,
                );
                rates.push(RatePair {
                    fraction,
                    offered,
                    api,
                    pgbench,
                });
            }
        }
        routes.push(RouteRun {
            route,
            label: route.label(),
            pairs,
        });
    }
    Ok(CatalogueRun {
        books,
        offers,
        seed_seconds,
        routes,
        rates,
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

/// What the API side's requests are drawn from.
#[derive(Debug)]
struct Requests {
    base: String,
    books: i64,
    ids: Vec<Uuid>,
    vocabulary: Vocabulary,
    deep: DeepRow,
}

impl Requests {
    /// The URL of one request of `route`, drawn with `rng`.
    fn url(&self, route: Route, rng: &mut Rng) -> String {
        let base = &self.base;
        let pick = |words: &[String], rng: &mut Rng| {
            words[rng.between_1_and(words.len() as u64) as usize - 1].clone()
        };
        match route {
            Route::Offers => {
                let n = rng.between_1_and(self.ids.len() as u64) as usize;
                format!("{base}/offers/{}", self.ids[n - 1])
            }
            Route::FirstPages | Route::AnyPage => {
                let page = rng.between_1_and(u64::from(route.pages(self.books)));
                format!("{base}/books?page={page}&pageSize={PAGE_SIZE}")
            }
            Route::SearchSurname => {
                let surname = pick(&self.vocabulary.surnames, rng);
                format!("{base}/books?q={surname}&pageSize={PAGE_SIZE}")
            }
            Route::SearchSurnameNoun => {
                let surname = pick(&self.vocabulary.surnames, rng);
                let noun = pick(&self.vocabulary.nouns, rng);
                format!("{base}/books?q={surname}+{noun}&pageSize={PAGE_SIZE}")
            }
            Route::DeepCursor => format!(
                "{base}/books?after={}&pageSize={PAGE_SIZE}",
                self.deep.cursor
            ),
            Route::DeepOffset => format!(
                "{base}/books?page={}&pageSize={PAGE_SIZE}",
                self.deep.page()
            ),
        }
    }
}

/// Searches drawn to check that a search route finds books.
const CHECK_SEARCHES: usize = 200;

/// Checks that `route` answers what it is measured for: a search finds
/// books, and the deep page by cursor holds the same books as by page
/// number, a full page of them.
async fn check(requests: &Requests, route: Route) -> Result<()> {
    let client = http_client(1)?;
    let ids = |body: serde_json::Value| -> Vec<String> {
        let items = body.get("items").unwrap_or(&body);
        items
            .as_array()
            .map(|books| {
                books
                    .iter()
                    .filter_map(|book| book["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let get = |url: String| {
        let client = client.clone();
        async move {
            let response = client.get(&url).send().await?;
            if !response.status().is_success() {
                bail!("GET {url} answered {}", response.status());
            }
            anyhow::Ok(response.json::<serde_json::Value>().await?)
        }
    };
    let mut rng = Rng(salt());
    match route {
        Route::SearchSurname | Route::SearchSurnameNoun => {
            // Most surname and noun pairs match no book of a small
            // catalogue (one in ten at 10,000 books): some of many draws
            // must find books.
            for _ in 0..CHECK_SEARCHES {
                if !ids(get(requests.url(route, &mut rng)).await?).is_empty() {
                    return Ok(());
                }
            }
            bail!("{}: {CHECK_SEARCHES} searches found no book", route.label())
        }
        Route::DeepCursor => {
            let by_cursor = ids(get(requests.url(Route::DeepCursor, &mut rng)).await?);
            let by_page = ids(get(requests.url(Route::DeepOffset, &mut rng)).await?);
            if by_cursor.len() != PAGE_SIZE as usize || by_cursor != by_page {
                bail!(
                    "the deep page by cursor ({} books) is not the page by number ({} books)",
                    by_cursor.len(),
                    by_page.len()
                );
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The book the deep pages start after, with its key and cursor.
async fn deep_row(pool: &PgPool, books: i64) -> Result<DeepRow> {
    let n = DeepRow::position(books).max(1);
    let (created_at, id, cursor_time): (String, Uuid, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as(
            "SELECT b.created_at::text, b.id, b.created_at FROM bench_book_ids i
             JOIN books b ON b.id = i.id WHERE i.n = $1",
        )
        .bind(n)
        .fetch_one(pool)
        .await
        .context("finding the deep page's first key")?;
    Ok(DeepRow {
        n,
        created_at,
        id,
        cursor: book_cursor(cursor_time, id),
    })
}

/// `GET` requests of `route` started at `offered` per second for
/// `duration` (open loop), latency from each one's scheduled start.
async fn open_loop_api(
    requests: &Arc<Requests>,
    route: Route,
    offered: f64,
    duration: Duration,
) -> Result<LevelResult> {
    let client = http_client(RATE_CLIENTS)?;
    let requests = Arc::clone(requests);
    let salt = salt();
    Ok(open_loop(offered, duration, move |sequence| {
        let url = requests.url(route, &mut Rng(salt ^ sequence));
        let client = client.clone();
        async move { get_ok(&client, &url).await }
    })
    .await)
}

async fn measure_api(
    requests: &Arc<Requests>,
    route: Route,
    concurrency: usize,
    duration: Duration,
) -> Result<LevelResult> {
    let client = http_client(concurrency)?;
    let requests = Arc::clone(requests);
    let salt = salt();
    Ok(closed_loop(concurrency, duration, move |task, sequence| {
        let mut rng = Rng(salt ^ ((task as u64) << 40) ^ sequence);
        let url = requests.url(route, &mut rng);
        let client = client.clone();
        async move { get_ok(&client, &url).await }
    })
    .await)
}

/// A seed for the load's random pages, different at each run.
fn salt() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `GET url`, its whole body read; an error unless it answered 2xx.
async fn get_ok(client: &reqwest::Client, url: &str) -> Result<()> {
    let response = client.get(url).send().await?;
    if !response.status().is_success() {
        bail!("GET {url} answered {}", response.status());
    }
    response.bytes().await?;
    Ok(())
}
