//! The results: tables on standard output, `docs/performance.md`, and PNG
//! charts of throughput and p99 latency against concurrency.
//!
//! This module computes what the report states (peaks, ratios, which
//! targets are met); the prose around the figures is in
//! `benchmark/templates/`, rendered with minijinja.

use std::path::Path;

use anyhow::{Context, Result};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{context, Environment, Value};
use plotters::style::{Color, Palette, Palette99, RGBColor, BLUE, RED};
use serde::Serialize;

use crate::charts::{self, Chart, Series};
use crate::machine::{self, Machine};
use crate::phases::applying::Applying;
use crate::phases::cluster::ClusterReport;
use crate::phases::durable::DurableReport;
use crate::phases::end_to_end::{self, EndToEnd};
use crate::phases::latency::Latency;
use crate::phases::offers::OfferLevel;
use crate::phases::reads::{self, ReadReport, Route};
use crate::raw_two_hop;
use crate::stats::LevelResult;

/// The templates, compiled into the binary so that it runs from anywhere.
const TEMPLATES: [(&str, &str); 7] = [
    (
        "performance.md.j2",
        include_str!("../templates/performance.md.j2"),
    ),
    (
        "writes-tables.md.j2",
        include_str!("../templates/writes-tables.md.j2"),
    ),
    ("reads.md.j2", include_str!("../templates/reads.md.j2")),
    (
        "durable-tables.md.j2",
        include_str!("../templates/durable-tables.md.j2"),
    ),
    ("durable.md.j2", include_str!("../templates/durable.md.j2")),
    (
        "reads-tables.md.j2",
        include_str!("../templates/reads-tables.md.j2"),
    ),
    ("cluster.md.j2", include_str!("../templates/cluster.md.j2")),
];

/// Accepted `POST /offer` as a fraction of raw confirmed publishes.
const WRITE_RATE_TARGET: f64 = 0.8;
/// p99 of the API at 64 connections, in milliseconds (writes and reads).
const P99_TARGET_MS: f64 = 10.0;
/// Offers applied per second end to end.
const APPLIED_TARGET: f64 = 5_000.0;
/// Applied end to end, and accepted with the consumers applying, as a
/// fraction of the raw two hops.
const RAW_TWO_HOP_TARGET: f64 = 0.8;
/// p99 at 50% of the maximum rate, as a multiple of the raw reference's.
const P99_VS_RAW_TARGET: f64 = 2.0;
/// Peak RSS of the API and of the worker, in KiB.
const RSS_TARGET_KIB: u64 = 64 * 1024;
/// Read rate as a fraction of pgbench's.
const READ_RATE_TARGET: f64 = 0.70;
/// p99 at the largest catalogue over p99 at the smallest.
const GROWTH_TARGET: f64 = 1.5;
/// A search's latency (p50 and p99) over a plain page's (pages 1..20) at
/// the same concurrency, on the largest catalogue.
const SEARCH_VS_PAGE_TARGET: f64 = 1.5;

/// Everything the write phases measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WriteReport {
    pub(crate) machine: Machine,
    pub(crate) date: String,
    pub(crate) level_seconds: f64,
    /// Per concurrency: the API's `POST /offer` and the raw confirmed publish.
    pub(crate) levels: Vec<OfferLevel>,
    /// Accepted offers and raw publishes with their consumers applying.
    pub(crate) applying: Option<Applying>,
    /// `POST /offer` and raw publishes at fixed offered rates.
    pub(crate) latency: Option<Latency>,
    pub(crate) end_to_end: Option<EndToEnd>,
    /// Peak RSS of the API process, in KiB.
    pub(crate) api_peak_rss_kib: Option<u64>,
    /// Peak RSS of the worker process, in KiB.
    pub(crate) worker_peak_rss_kib: Option<u64>,
}

/// `1000` as `1k`, `1000000` as `1M`.
fn books_label(books: i64) -> String {
    match books {
        b if b >= 1_000_000 && b % 1_000_000 == 0 => format!("{}M", b / 1_000_000),
        b if b >= 1_000 && b % 1_000 == 0 => format!("{}k", b / 1_000),
        b => b.to_string(),
    }
}

fn environment() -> Result<Environment<'static>> {
    let mut env = Environment::new();
    env.set_syntax(
        SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(true)
            .build()?,
    );
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .with_context(|| format!("template {name}"))?;
    }
    env.add_filter("fixed", |value: f64, decimals: usize| {
        format!("{value:.decimals$}")
    });
    env.add_filter("micros", |value: Option<f64>| {
        value.map_or_else(|| "-".to_owned(), |value| format!("{value:.0}"))
    });
    env.add_filter("mib", |kib: Option<u64>| {
        kib.map_or_else(
            || "n/a".to_owned(),
            |kib| format!("{:.1} MiB", kib as f64 / 1024.0),
        )
    });
    env.add_filter("books", books_label);
    env.add_function("ratio", |a: f64, b: f64, decimals: usize| {
        if b > 0.0 && a.is_finite() && b.is_finite() {
            format!("{:.decimals$}", a / b)
        } else {
            "n/a".to_owned()
        }
    });
    // The API's CPU beyond its two limits (bare HTTP, a publish), in µs and
    // as a ratio; `-` when one of them was not measured.
    env.add_function(
        "beyond",
        |api: Option<f64>, bare: Option<f64>, publisher: Option<f64>| match (api, bare, publisher) {
            (Some(api), Some(bare), Some(publisher)) => format!("{:.0}", api - bare - publisher),
            _ => "-".to_owned(),
        },
    );
    env.add_function(
        "over",
        |api: Option<f64>, bare: Option<f64>, publisher: Option<f64>| match (api, bare, publisher) {
            (Some(api), Some(bare), Some(publisher)) if bare + publisher > 0.0 => {
                format!("{:.2}", api / (bare + publisher))
            }
            _ => "-".to_owned(),
        },
    );
    env.add_function("met", |met: bool| if met { "met" } else { "not met" });
    Ok(env)
}

fn render(name: &str, context: Value) -> Result<String> {
    let env = environment()?;
    let template = env.get_template(name)?;
    template
        .render(context)
        .with_context(|| format!("rendering {name}"))
}

/// The figures and verdicts of the write phases, for the templates.
fn writes_context(report: &WriteReport, charts: bool) -> Value {
    let levels = &report.levels;
    let at = |concurrency| levels.iter().find(|l| l.api.concurrency == concurrency);
    let under = |kib: Option<u64>| kib.is_some_and(|kib| kib < RSS_TARGET_KIB);
    let facts = context! {
        charts,
        raw_at_end_to_end => at(end_to_end::CONCURRENCY).map(|l| l.raw.rate),
        api_peak => Serde(levels.iter().max_by(|a, b| a.api.rate.total_cmp(&b.api.rate))),
        raw_peak => Serde(levels.iter().max_by(|a, b| a.raw.rate.total_cmp(&b.raw.rate))),
        first => Serde(levels.first()),
        at_64 => Serde(at(64)),
        // Closed loop: 64 requests always in flight, so the mean latency
        // is 64 / rate (Little's law), whatever the code.
        at_64_mean_ms => at(64).map(|l| context! {
            api => 64_000.0 / l.api.rate,
            raw => 64_000.0 / l.raw.rate,
        }),
        below_rate => Serde(levels
            .iter()
            .filter(|l| l.api.rate < WRITE_RATE_TARGET * l.raw.rate)
            .collect::<Vec<_>>()),
        rss_met => under(report.api_peak_rss_kib) && under(report.worker_peak_rss_kib),
        raw_batch => raw_two_hop::BATCH,
        at_half => Serde(report.latency.as_ref().and_then(|latency| {
            latency.levels.iter().find(|l| (l.fraction - 0.5).abs() < 1e-9)
        })),
        targets => context! {
            rate => WRITE_RATE_TARGET,
            p99_ms => P99_TARGET_MS,
            applied_per_second => APPLIED_TARGET,
            raw_two_hop => RAW_TWO_HOP_TARGET,
            p99_vs_raw => P99_VS_RAW_TARGET,
        },
    };
    context! { ..facts, ..Serde(report) }
}

/// The figures and verdicts of the read phase, for the templates.
fn reads_context(report: &ReadReport) -> Value {
    let realistic = [
        Route::FirstPages,
        Route::Offers,
        Route::SearchSurname,
        Route::SearchSurnameNoun,
    ];
    let mut rate_count = 0;
    let mut below_rate = Vec::new();
    let mut at_64 = Vec::new();
    for catalogue in &report.catalogues {
        for route in catalogue
            .routes
            .iter()
            .filter(|r| realistic.contains(&r.route))
        {
            for pair in &route.pairs {
                rate_count += 1;
                let ratio = pair.api.rate / pair.pgbench.rate;
                if ratio.is_nan() || ratio < READ_RATE_TARGET {
                    below_rate.push(context! {
                        label => route.label,
                        books => catalogue.books,
                        concurrency => pair.api.concurrency,
                        ratio,
                    });
                }
            }
        }
        for route in realistic {
            if let Some(pair) = report.find(catalogue.books, route, 64) {
                at_64.push(context! {
                    label => route.label(),
                    books => catalogue.books,
                    pair => Serde(pair),
                    api_mean_ms => 64_000.0 / pair.api.rate,
                    pgbench_mean_ms => 64_000.0 / pair.pgbench.rate,
                });
            }
        }
    }
    let (mut growth_rows, mut growth_targets, mut sizes) = (Vec::new(), Vec::new(), None);
    if let (Some(small), Some(large)) = (report.catalogues.first(), report.catalogues.last()) {
        sizes = Some(context! { small => small.books, large => large.books });
        if small.books != large.books {
            for route in &small.routes {
                for pair in &route.pairs {
                    let concurrency = pair.api.concurrency;
                    if let Some(b) = report.find(large.books, route.route, concurrency) {
                        growth_rows.push(context! { label => route.label, a => Serde(pair.api), b => Serde(b.api) });
                    }
                }
            }
        }
        for route in [Route::FirstPages, Route::Offers] {
            for concurrency in reads::LEVELS {
                let (Some(a), Some(b)) = (
                    report.find(small.books, route, concurrency),
                    report.find(large.books, route, concurrency),
                ) else {
                    continue;
                };
                let growth = b.api.p99_ms / a.api.p99_ms;
                if concurrency == 64 || growth > GROWTH_TARGET {
                    growth_targets.push(context! {
                        label => route.label(),
                        concurrency,
                        p99 => growth,
                        p50 => b.api.p50_ms / a.api.p50_ms,
                    });
                }
            }
        }
    }
    let (search_rows, search_targets, deep_rows) = search_and_deep(report);
    context! {
        level_seconds => report.level_seconds,
        api_pool => report.api_pool,
        catalogues => Serde(&report.catalogues),
        offers_per_book => reads::OFFERS_PER_BOOK,
        page_size => reads::PAGE_SIZE,
        first_pages => reads::FIRST_PAGES,
        deep_levels => Serde(reads::DEEP_LEVELS),
        cpus => machine::cpus(),
        rate_count,
        below_rate,
        at_64,
        sizes,
        growth_rows,
        growth_targets,
        search_rows,
        search_targets,
        deep_rows,
        deep_percent => reads::DEEP_FRACTION * 100.0,
        vocabulary => context! {
            surnames => marketplace::seed::words::SURNAMES.len(),
            nouns => marketplace::seed::words::NOUNS.len(),
        },
        targets => context! {
            search_vs_page => SEARCH_VS_PAGE_TARGET,
            p99_vs_pgbench => P99_VS_RAW_TARGET,
            rate => READ_RATE_TARGET,
            p99_ms => P99_TARGET_MS,
            growth => GROWTH_TARGET,
        },
    }
}

/// Searches beside a plain page (pages 1..20) at the same concurrency, on
/// every catalogue; the verdicts of the largest one; and the deep page by
/// cursor beside the same page by `OFFSET`.
fn search_and_deep(report: &ReadReport) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let largest = report.catalogues.iter().map(|c| c.books).max();
    let (mut rows, mut targets, mut deep) = (Vec::new(), Vec::new(), Vec::new());
    for catalogue in &report.catalogues {
        for route in catalogue.routes.iter().filter(|r| r.route.is_search()) {
            for pair in &route.pairs {
                let concurrency = pair.api.concurrency;
                let Some(page) = report.find(catalogue.books, Route::FirstPages, concurrency)
                else {
                    continue;
                };
                let (p50, p99) = (
                    pair.api.p50_ms / page.api.p50_ms,
                    pair.api.p99_ms / page.api.p99_ms,
                );
                let row = context! {
                    label => route.label,
                    books => catalogue.books,
                    concurrency,
                    search => Serde(pair.api),
                    page => Serde(page.api),
                    p50,
                    p99,
                    pgbench => Serde(pair.pgbench),
                };
                if Some(catalogue.books) == largest {
                    targets.push(context! {
                        met => p50 <= SEARCH_VS_PAGE_TARGET && p99 <= SEARCH_VS_PAGE_TARGET,
                        ..row.clone()
                    });
                }
                rows.push(row);
            }
        }
        let Some(cursor) = catalogue
            .routes
            .iter()
            .find(|r| r.route == Route::DeepCursor)
        else {
            continue;
        };
        for pair in &cursor.pairs {
            let concurrency = pair.api.concurrency;
            if let Some(offset) = report.find(catalogue.books, Route::DeepOffset, concurrency) {
                deep.push(context! {
                    books => catalogue.books,
                    concurrency,
                    cursor => Serde(pair),
                    offset => Serde(offset),
                    first => report.find(catalogue.books, Route::FirstPages, concurrency).map(|p| Serde(p.api)),
                });
            }
        }
    }
    (rows, targets, deep)
}

/// The write phases' tables (Markdown, also readable as plain text).
pub(crate) fn writes_tables(report: &WriteReport) -> Result<String> {
    render("writes-tables.md.j2", writes_context(report, false))
}

/// The share of raw batched inserts the durable bus must accept.
const DURABLE_TARGET: f64 = 0.8;

/// The durable phase's figures and verdicts, for the templates.
fn durable_context(durable: &DurableReport) -> Value {
    let levels = durable
        .bus
        .runs
        .iter()
        .map(|run| run.levels.len())
        .sum::<usize>();
    let below: Vec<_> = durable
        .bus
        .runs
        .iter()
        .flat_map(|run| {
            run.levels
                .iter()
                .filter(|level| level.bus.rate < DURABLE_TARGET * level.raw_rows_per_second)
                .map(move |level| {
                    context! {
                        database => run.database,
                        concurrency => level.bus.concurrency,
                        ratio => level.bus.rate / level.raw_rows_per_second,
                    }
                })
        })
        .collect();
    context! {
        target => DURABLE_TARGET,
        levels,
        below,
        ..Serde(durable)
    }
}

/// The durable phase's tables: the bus in process beside raw batched
/// inserts and the in-memory bus, then accepted offers over HTTP beside raw
/// batched inserts, per database and level.
pub(crate) fn durable_tables(durable: &DurableReport) -> Result<String> {
    render(
        "durable-tables.md.j2",
        context! { durable => durable_context(durable) },
    )
}

/// The read phase's tables.
pub(crate) fn reads_tables(reads: &ReadReport) -> Result<String> {
    render(
        "reads-tables.md.j2",
        context! { reads => reads_context(reads) },
    )
}

/// The read phase's section alone, under a level-2 heading.
pub(crate) fn reads_markdown(reads: &ReadReport, command: &str, charts: bool) -> Result<String> {
    render(
        "reads.md.j2",
        context! { command, read_charts => charts, reads => reads_context(reads) },
    )
}

/// The whole `docs/performance.md`.
pub(crate) fn performance_markdown(
    writes: &WriteReport,
    reads: &ReadReport,
    durable: Option<&DurableReport>,
    command: &str,
    charts: bool,
    read_charts: bool,
) -> Result<String> {
    let context = context! {
        command,
        read_charts,
        reads => reads_context(reads),
        durable => durable.map(durable_context),
        ..writes_context(writes, charts)
    };
    render("performance.md.j2", context)
}

/// The first line of the cluster section in `docs/performance.md`.
const CLUSTER_BEGIN: &str =
    "<!-- begin: the cluster phase's section (benchmark --only cluster replaces it) -->";
/// The last line of the cluster section.
const CLUSTER_END: &str = "<!-- end: the cluster phase's section -->";

/// The cluster phase's section, between its markers.
pub(crate) fn cluster_markdown(cluster: &ClusterReport, command: &str) -> Result<String> {
    render(
        "cluster.md.j2",
        context! {
            command,
            begin => CLUSTER_BEGIN,
            end => CLUSTER_END,
            raw_batch => raw_two_hop::BATCH,
            ..Serde(cluster)
        },
    )
}

/// The cluster section of `document`, markers included, if it has one.
pub(crate) fn cluster_section(document: &str) -> Option<&str> {
    let start = document.find(CLUSTER_BEGIN)?;
    let end = start + document[start..].find(CLUSTER_END)? + CLUSTER_END.len();
    Some(&document[start..end])
}

/// `document` with its cluster section replaced by `section`, or with
/// `section` appended when it has none.
pub(crate) fn with_cluster_section(document: &str, section: &str) -> String {
    let section = section.trim_end();
    match cluster_section(document) {
        Some(old) => document.replacen(old, section, 1),
        None if document.trim().is_empty() => format!("{section}\n"),
        None => format!("{}\n\n{section}\n", document.trim_end()),
    }
}

/// Writes `performance-throughput.png` and `performance-p99.png` in `dir`.
pub(crate) fn writes_charts(report: &WriteReport, dir: &Path) -> Result<()> {
    let lines = |value: fn(&LevelResult) -> f64| {
        let side = |label: &str, color: RGBColor, pick: fn(&OfferLevel) -> &LevelResult| Series {
            label: label.to_owned(),
            points: report
                .levels
                .iter()
                .map(|level| (pick(level).concurrency, value(pick(level))))
                .collect(),
            color: color.to_rgba(),
            thin: false,
        };
        [
            side("API POST /offer", RED, |level| &level.api),
            side("raw lapin confirmed publish", BLUE, |level| &level.raw),
        ]
    };
    let chart = |title, y_label| Chart {
        title,
        x_label: "concurrency",
        y_label,
        size: (900, 540),
    };
    charts::draw(
        &dir.join("performance-throughput.png"),
        &chart("Throughput vs concurrency", "operations per second"),
        &lines(|level| level.rate),
    )?;
    charts::draw(
        &dir.join("performance-p99.png"),
        &chart("p99 latency vs concurrency", "p99 latency (ms)"),
        &lines(|level| level.p99_ms),
    )
}

/// Writes `performance-reads-throughput.png` and `performance-reads-p99.png`.
pub(crate) fn reads_charts(reads: &ReadReport, dir: &Path) -> Result<()> {
    let mut rate = Vec::new();
    let mut p99 = Vec::new();
    for catalogue in &reads.catalogues {
        for route in catalogue.routes.iter().filter(|r| !r.route.is_deep()) {
            for (side, pick) in [
                (
                    "API",
                    (|p: &reads::Pair| p.api) as fn(&reads::Pair) -> LevelResult,
                ),
                ("pgbench", |p: &reads::Pair| p.pgbench),
            ] {
                // The API and pgbench on the same route and catalogue
                // share a colour; pgbench is the thin line.
                let color = Palette99::pick(rate.len() / 2 * 2).to_rgba();
                let line = |value: fn(&LevelResult) -> f64| Series {
                    label: format!("{} {side}, {}", route.label, books_label(catalogue.books)),
                    points: route
                        .pairs
                        .iter()
                        .map(|p| (pick(p).concurrency, value(&pick(p))))
                        .collect(),
                    color,
                    thin: side == "pgbench",
                };
                rate.push(line(|level| level.rate));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuPerMessage;
    use crate::phases::reads::{CatalogueRun, Pair, RouteRun};
    use crate::raw_two_hop::RawEndToEnd;

    fn level(concurrency: usize, rate: f64, p99_ms: f64) -> LevelResult {
        let (ok, seconds) = ((rate * 5.0) as u64, 5.0);
        let p50_ms = p99_ms / 3.0;
        let errors = 0;
        LevelResult {
            concurrency,
            ok,
            errors,
            seconds,
            rate,
            p50_ms,
            p99_ms,
        }
    }

    fn cpu(by_process: &[(&'static str, Option<f64>)]) -> CpuPerMessage {
        let total = by_process.iter().filter_map(|(_, used)| *used).sum();
        CpuPerMessage {
            by_process: by_process.iter().copied().collect(),
            total,
        }
    }

    /// Two write levels, an end-to-end run, and two catalogues of reads.
    fn fixture() -> (WriteReport, ReadReport) {
        let levels = [(1, 1388.0, 1873.0), (64, 5346.0, 9806.0)].map(|(c, api, raw)| OfferLevel {
            api: level(c, api, 50.0),
            raw: level(c, raw, 38.5),
            api_cpu: cpu(&[
                ("api", Some(83.0)),
                ("generator", Some(51.0)),
                ("broker", None),
            ]),
            raw_cpu: cpu(&[("generator", Some(32.0)), ("broker", Some(103.0))]),
            bare: level(c, 15000.0, 9.0),
            bare_cpu: cpu(&[("bare", Some(20.0)), ("generator", Some(40.0))]),
        });
        let machine = Machine {
            cpus: 2,
            cpu_model: "AMD EPYC".into(),
            memory_gib: 23.5,
        };
        let end_to_end = EndToEnd {
            offers: 50000,
            books: 50000,
            retries: 0,
            accept_seconds: 42.02,
            applied_seconds: 44.28,
            accepted_per_second: 1190.0,
            applied_per_second: 1129.0,
            concurrency: 64,
            raw: Some(RawEndToEnd {
                messages: 50000,
                concurrency: 64,
                publish_seconds: 9.5,
                applied_seconds: 10.0,
                published_per_second: 5263.0,
                applied_per_second: 5000.0,
            }),
        };
        let writes = WriteReport {
            machine,
            date: "2026-11-23T15:16:04Z".into(),
            level_seconds: 5.0,
            levels: levels.to_vec(),
            applying: Some(Applying {
                api: level(64, 1380.0, 170.0),
                api_applied: 6000,
                raw: level(64, 4700.0, 30.0),
                raw_applied: 23000,
            }),
            latency: Some(Latency {
                max_rate: 1380.0,
                levels: vec![crate::phases::latency::RateLevel {
                    fraction: 0.5,
                    offered: 690.0,
                    api: level(12, 690.0, 9.0),
                    raw: level(3, 690.0, 3.0),
                }],
            }),
            end_to_end: Some(end_to_end),
            api_peak_rss_kib: Some(40857),
            worker_peak_rss_kib: None,
        };
        let catalogue = |books: i64, p99_ms: f64| CatalogueRun {
            books,
            offers: 2 * books,
            seed_seconds: 0.7,
            routes: [
                Route::FirstPages,
                Route::AnyPage,
                Route::SearchSurname,
                Route::DeepCursor,
                Route::DeepOffset,
            ]
            .map(|route| RouteRun {
                route,
                label: route.label(),
                pairs: vec![Pair {
                    api: level(
                        64,
                        3610.0,
                        if route.is_search() {
                            1.4 * p99_ms
                        } else {
                            p99_ms
                        },
                    ),
                    pgbench: level(64, 6881.0, 19.25),
                    api_cpu: cpu(&[("api", Some(207.0)), ("postgres", Some(265.0))]),
                    pgbench_cpu: cpu(&[("pgbench", Some(27.0)), ("postgres", None)]),
                }],
            })
            .to_vec(),
            rates: vec![crate::phases::reads::RatePair {
                fraction: 0.5,
                offered: 1800.0,
                api: level(9, 1790.0, 6.0),
                pgbench: level(64, 1800.0, 2.0),
            }],
        };
        let catalogues = vec![catalogue(10_000, 29.49), catalogue(1_000_000, 32.59)];
        let reads = ReadReport {
            level_seconds: 5.0,
            api_pool: 20,
            catalogues,
        };
        (writes, reads)
    }

    #[test]
    fn the_report_states_every_target_with_its_verdict_and_links_its_charts() {
        let (writes, reads) = fixture();
        let markdown =
            performance_markdown(&writes, &reads, None, "cargo run", true, true).unwrap();
        for expected in [
            "# Performance\n\n",
            "| 64 | 5346 | 9806 | 0.545 | 16.67 | 12.83 | 50.00 | 38.50 | 1.299 | 0 | 0 |",
            "below at concurrency 1 (0.741), 64 (0.545).",
            "RabbitMQ -) against 135 µs per raw publish",
            "- p99 under 10 ms at 64 connections: 50.00 ms, not met",
            "- >= 5,000 offers applied per second end to end: 1129/s, not met.",
            "| raw two hops, batches of 50 | 50000 | 64 | 9.50 | 5263 | 10.00 | 5000 | |",
            "- applied end to end >= 80% of the raw two hops (same messages and publishers, batches of 50, measured right after): 0.226, not met (1129/s against 5000/s).",
            "| API/raw | 0.294 | 5.667 | 5.667 | | |",
            "| API/raw | | | | 0.226 | | 0.226 | |",
            "Raw confirmed publishes alone at concurrency 64: 9806 msg/s (applied/raw publishes 0.115).",
            "| 50% | 690 | 3.00 | 1.00 | 9.00 | 3.00 | 3.000 | 12 | 3 | 0 | 0 |",
            "- at 50% of the maximum rate, p99 of `POST /offer` <= 2x raw confirmed publishes' p99 at that rate: 3.000, not met",
            "- accepted `POST /offer` with the worker applying >= 80% of raw publishes with the raw consumers applying: 0.294, not met",
            "- API and worker under 64 MiB peak RSS: 39.9 MiB and n/a, not met.",
            "![p99 latency](performance-p99.png)",
            "\n## Reads: `GET /books`, its searches and `GET /offers/{bookId}` beside pgbench\n",
            "### Growth of the API's latency from 10k to 1M books",
            "| 50% | 1800 | 1790 | 1800 | 2.00 | 0.67 | 6.00 | 2.00 | 3.00 | 9 | 0 | 0 |",
            "- at 50% of the maximum rate, p99 of `GET /books` (pages 1..20) <= 2x pgbench's at that rate, 1M books: 3.00, not met (6.00 ms against 2.00 ms at 1800/s offered)",
            "- rate >= 70% of pgbench's for the same SQL: 0 of 4 measurements; below: GET /books (pages 1..20) at 10k books, concurrency 64 (0.52), ",
            "| 1M | GET /books?q=surname | 64 | 3610 | 3610 | 15.21 | 10.86 | 1.40 | 45.63 | 32.59 | 1.40 | 0.52 |",
            "- GET /books?q=surname within 1.5x a plain page's latency (pages 1..20) at 1M books, concurrency 64: p50 1.40x, p99 1.40x, met",
            "| 1M | 64 | 3610 | 0.52 | 10.86 | 32.59 | 3610 | 0.52 | 10.86 | 32.59 | 1.00 | 10.86 |",
            "- p99 at 1M books within 1.5x of 10k books, GET /books (pages 1..20) at concurrency 64: 1.11x, met (p50 1.11x)",
            "![read p99 latency](performance-reads-p99.png)",
        ] {
            assert!(markdown.contains(expected), "{expected:?} missing from:\n{markdown}");
        }
        assert!(!markdown.contains("{{") && !markdown.contains("{%"));
        let mut partial = writes.clone();
        partial.levels.clear();
        let tables = writes_tables(&partial).unwrap();
        assert!(tables.contains("| raw two hops, batches of 50 |"));
        assert!(!tables.contains("Raw confirmed publishes alone") && !tables.contains("NaN"));
        let alone = reads_markdown(&reads, "cargo run", false).unwrap();
        assert!(alone.starts_with("## Reads") && !alone.contains(".png"));
    }
    fn durable_fixture() -> DurableReport {
        use crate::phases::durable::{DurableLevel, DurableRun};
        use crate::phases::durable_bus::{BusLevel, BusReport, BusRun};
        let bus_level = |rate: f64, raw_rate: f64, rows: usize| BusLevel {
            bus: level(64, rate, 3.0),
            group_size: rows as f64 + 0.2,
            raw: level(64, raw_rate / rows as f64, 6.0),
            raw_rows_per_transaction: rows,
            raw_tasks: 64usize.div_ceil(rows),
            raw_rows_per_second: raw_rate,
        };
        DurableReport {
            level_seconds: 3.0,
            rows_per_transaction: 50,
            bus: BusReport {
                runs: vec![
                    BusRun {
                        database: "SQLite",
                        levels: vec![bus_level(9000.0, 10000.0, 40)],
                    },
                    BusRun {
                        database: "PostgreSQL",
                        levels: vec![bus_level(7000.0, 10000.0, 16)],
                    },
                ],
                memory: vec![level(64, 200000.0, 0.9)],
            },
            api: vec![DurableRun {
                database: "SQLite",
                levels: vec![DurableLevel {
                    api: level(64, 3500.0, 40.0),
                    raw: level(64, 1000.0, 5.0),
                    rows_per_transaction: 50,
                    raw_rows_per_second: 50000.0,
                }],
            }],
        }
    }

    #[test]
    fn the_durable_section_compares_the_bus_with_raw_inserts_and_states_the_target() {
        let (writes, reads) = fixture();
        let durable = durable_fixture();
        let markdown =
            performance_markdown(&writes, &reads, Some(&durable), "cargo run", true, true).unwrap();
        for expected in [
            "\n## The durable default beside raw batched inserts\n",
            "| SQLite | 64 | 9000 | 1.00 | 3.00 | 40.2 | 10000 | 2 x 40 | 2.00 | 6.00 | 0.900 | met | 0 | 0 |",
            "| PostgreSQL | 64 | 7000 | 1.00 | 3.00 | 16.2 | 10000 | 4 x 16 | 2.00 | 6.00 | 0.700 | not met | 0 | 0 |",
            "| 64 | 200000 | 0.300 | 0.900 | 0 |",
            "| SQLite | 64 | 3500 | 50000 | 0.070 | 40.00 | 5.00 | 0 | 0 |",
            "raw batched inserts of the same rows: 1 of 2 levels; below at PostgreSQL 64 (0.700).",
        ] {
            assert!(markdown.contains(expected), "{expected:?} missing from:\n{markdown}");
        }
        assert!(!markdown.contains("{{") && !markdown.contains("{%"));
        let tables = durable_tables(&durable).unwrap();
        assert!(
            tables.starts_with("### The durable bus in process")
                && !tables.contains("## The durable default")
        );
    }

    #[test]
    fn the_cluster_section_compares_api_and_raw_and_replaces_only_itself() {
        use crate::phases::offers::Pair as OfferPair;
        let (writes, _) = fixture();
        let cluster = ClusterReport {
            machine: writes.machine.clone(),
            date: "2026-12-01T00:00:00Z".into(),
            nodes: vec![
                "127.0.0.1:5681".into(),
                "127.0.0.1:5682".into(),
                "127.0.0.1:5683".into(),
            ],
            level_seconds: 5.0,
            levels: vec![OfferPair {
                api: level(64, 1500.0, 80.0),
                raw: level(64, 3000.0, 40.0),
                api_cpu: cpu(&[("api", Some(150.0))]),
                raw_cpu: cpu(&[("generator", Some(60.0))]),
            }],
            end_to_end: writes.end_to_end,
        };
        let section = cluster_markdown(&cluster, "cargo run -- --only cluster").unwrap();
        for expected in [
            "## On a three-node quorum cluster\n",
            "- command: `cargo run -- --only cluster`",
            "3 nodes (127.0.0.1:5681, 127.0.0.1:5682, 127.0.0.1:5683) on one machine, 2 CPUs",
            "not a cluster with a single node",
            "| 64 | 1500 | 26.67 | 80.00 | 3000 | 13.33 | 40.00 | 0.500 | 0 | 0 |",
            "| raw two hops, batches of 50 | 50000 | 64 | 5263 | 5000 | 10.00 |",
            "Applied end to end, API/raw: 0.226.",
        ] {
            assert!(
                section.contains(expected),
                "{expected:?} missing from:\n{section}"
            );
        }
        assert!(section.starts_with(CLUSTER_BEGIN) && section.trim_end().ends_with(CLUSTER_END));
        assert!(!section.contains("{{") && !section.contains("NaN"));

        let document = "# Performance\n\n## Reads\n\nfigures\n";
        let once = with_cluster_section(document, &section);
        assert!(once.starts_with(document) && once.contains("## On a three-node quorum cluster"));
        let again = with_cluster_section(&once, &section.replace("0.500", "0.600"));
        assert_eq!(again, once.replace("0.500", "0.600"));
        assert_eq!(
            cluster_section(&again).map(|s| s.contains("0.600")),
            Some(true)
        );
        assert_eq!(cluster_section(document), None);
    }
}
