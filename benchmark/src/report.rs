//! The results: a table on standard output, `docs/performance.md`, and PNG
//! charts of throughput and p99 latency against concurrency.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use plotters::style::{Color, RGBColor, BLUE, RED};

use crate::charts::{self, Chart, Series};
use crate::load::{EndToEnd, LevelResult};

/// The machine the benchmark ran on.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Total memory from `/proc/meminfo`, in GiB.
    pub memory_gib: f64,
}

impl Machine {
    /// Reads the machine's description from `/proc`.
    pub fn detect() -> Self {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|line| line.strip_prefix("MemTotal:"))
                    .and_then(|rest| {
                        rest.trim()
                            .trim_end_matches("kB")
                            .trim()
                            .parse::<f64>()
                            .ok()
                    })
            })
            .map(|kib| kib / 1024.0 / 1024.0)
            .unwrap_or(0.0);
        Self {
            cpus,
            cpu_model,
            memory_gib,
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// Where it ran.
    pub machine: Machine,
    /// When it ran (UTC, RFC 3339).
    pub date: String,
    /// The command that produced it.
    pub command: String,
    /// Seconds each concurrency level ran.
    pub level_seconds: f64,
    /// Per concurrency: the API's `POST /offer` and the raw confirmed publish.
    pub levels: Vec<(LevelResult, LevelResult)>,
    /// Per concurrency: CPU per message on the API side and on the raw side.
    pub cpu: Vec<(CpuPerMessage, CpuPerMessage)>,
    /// The end-to-end run, if it completed.
    pub end_to_end: Option<EndToEnd>,
    /// Concurrency of the end-to-end run.
    pub end_to_end_concurrency: usize,
    /// Peak RSS of the API process, in KiB.
    pub api_peak_rss_kib: Option<u64>,
    /// Peak RSS of the worker process, in KiB.
    pub worker_peak_rss_kib: Option<u64>,
}

/// Microseconds of CPU per message, by process, over one measurement.
#[derive(Debug, Clone, Default)]
pub struct CpuPerMessage {
    /// The API process (none on the raw side).
    pub api: Option<f64>,
    /// The benchmark process itself: the load generator.
    pub generator: Option<f64>,
    /// RabbitMQ's `beam.smp`.
    pub broker: Option<f64>,
}

impl From<Vec<Option<f64>>> for CpuPerMessage {
    /// From `[api, generator, broker]`.
    fn from(values: Vec<Option<f64>>) -> Self {
        let at = |n: usize| values.get(n).copied().flatten();
        Self {
            api: at(0),
            generator: at(1),
            broker: at(2),
        }
    }
}

impl CpuPerMessage {
    /// All processes together.
    pub fn total(&self) -> f64 {
        [self.api, self.generator, self.broker]
            .iter()
            .flatten()
            .sum()
    }
}

/// Microseconds, or `-` when not measured.
pub(crate) fn micros(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| format!("{value:.0}"))
}

/// `a / b` with `decimals` digits, or `n/a` when it has no meaning.
pub(crate) fn ratio_with(a: f64, b: f64, decimals: usize) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.decimals$}", a / b)
    } else {
        "n/a".to_owned()
    }
}

fn ratio(a: f64, b: f64) -> String {
    ratio_with(a, b, 3)
}

fn mib(kib: Option<u64>) -> String {
    kib.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "n/a".to_owned())
}

impl Report {
    fn raw_at(&self, concurrency: usize) -> Option<&LevelResult> {
        self.levels
            .iter()
            .find(|(_, raw)| raw.concurrency == concurrency)
            .map(|(_, raw)| raw)
    }

    /// The tables as Markdown (also readable as plain text).
    pub fn tables(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "### Accepted `POST /offer` vs raw confirmed publish ({:.0} s per level)\n",
            self.level_seconds
        );
        let _ = writeln!(
            out,
            "| concurrency | API req/s | raw msg/s | API/raw | API p50 ms | raw p50 ms | API p99 ms | raw p99 ms | p99 API/raw | API errors | raw errors |"
        );
        let _ = writeln!(
            out,
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (api, raw) in &self.levels {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} |",
                api.concurrency,
                api.per_second(),
                raw.per_second(),
                ratio(api.per_second(), raw.per_second()),
                api.p50_ms,
                raw.p50_ms,
                api.p99_ms,
                raw.p99_ms,
                ratio(api.p99_ms, raw.p99_ms),
                api.errors,
                raw.errors,
            );
        }
        if !self.cpu.is_empty() {
            let _ = writeln!(
                out,
                "\n### CPU per accepted message (µs), by process, during each level\n"
            );
            let _ = writeln!(
                out,
                "| concurrency | API: API process | API: load generator | API: RabbitMQ | API: total | raw: load generator | raw: RabbitMQ | raw: total | total API/raw |"
            );
            let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
            for ((api, _), (api_cpu, raw_cpu)) in self.levels.iter().zip(&self.cpu) {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {:.0} | {} | {} | {:.0} | {} |",
                    api.concurrency,
                    micros(api_cpu.api),
                    micros(api_cpu.generator),
                    micros(api_cpu.broker),
                    api_cpu.total(),
                    micros(raw_cpu.generator),
                    micros(raw_cpu.broker),
                    raw_cpu.total(),
                    ratio(api_cpu.total(), raw_cpu.total()),
                );
            }
        }
        let _ = writeln!(out, "\n### Applied end to end\n");
        match (&self.end_to_end, self.raw_at(self.end_to_end_concurrency)) {
            (Some(e2e), raw) => {
                let raw_rate = raw.map(LevelResult::per_second).unwrap_or(f64::NAN);
                let _ = writeln!(
                    out,
                    "| offers | books | concurrency | accepted in s | accepted/s | applied in s | applied/s | raw msg/s at {c} | applied/raw | resent |",
                    c = self.end_to_end_concurrency
                );
                let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.0} | {:.0} | {} | {} |",
                    e2e.offers,
                    e2e.books,
                    self.end_to_end_concurrency,
                    e2e.accept_seconds,
                    e2e.accepted_per_second(),
                    e2e.applied_seconds,
                    e2e.applied_per_second(),
                    raw_rate,
                    ratio(e2e.applied_per_second(), raw_rate),
                    e2e.retries,
                );
            }
            (None, _) => {
                let _ = writeln!(
                    out,
                    "The end-to-end run did not complete (see the log above)."
                );
            }
        }
        let _ = writeln!(out, "\n### Peak RSS (VmHWM) at the end\n");
        let _ = writeln!(out, "| process | peak RSS |\n|---|---:|");
        let _ = writeln!(
            out,
            "| `marketplace serve --bus rabbitmq` | {} |",
            mib(self.api_peak_rss_kib)
        );
        let _ = writeln!(
            out,
            "| `marketplace worker` | {} |",
            mib(self.worker_peak_rss_kib)
        );
        out
    }

    /// Sentences derived from the figures.
    pub fn analysis(&self) -> String {
        let mut out = String::new();
        if let Some((api, raw)) = self
            .levels
            .iter()
            .max_by(|a, b| a.0.per_second().total_cmp(&b.0.per_second()))
        {
            let _ = writeln!(
                out,
                "- The API peaked at {:.0} accepted offers/s at concurrency {}, {} of the raw confirmed-publish rate at the same concurrency ({:.0} msg/s).",
                api.per_second(),
                api.concurrency,
                ratio(api.per_second(), raw.per_second()),
                raw.per_second()
            );
        }
        if let Some((_, raw)) = self
            .levels
            .iter()
            .max_by(|a, b| a.1.per_second().total_cmp(&b.1.per_second()))
        {
            let _ = writeln!(
                out,
                "- The raw limit peaked at {:.0} msg/s at concurrency {}.",
                raw.per_second(),
                raw.concurrency
            );
        }
        if let Some((api, raw)) = self.levels.first() {
            let _ = writeln!(
                out,
                "- At concurrency {} (one request at a time) the API's p50 is {:.2} ms against {:.2} ms for a bare confirmed publish: the difference is what one request costs on top of the confirm (HTTP, validation, envelope, channel pool).",
                api.concurrency, api.p50_ms, raw.p50_ms
            );
        }
        if let Some(e2e) = &self.end_to_end {
            let _ = writeln!(
                out,
                "- End to end, {} offers over {} books were applied at {:.0}/s while {:.0}/s were accepted during the send (applied/accepted {}); API and worker run at the same time here and share the CPUs, and each offer costs the worker a PostgreSQL insert with its outbox row, the relay's confirmed publish of `OfferCreated`, and a cheapest-offer refresh under the book's row lock.",
                e2e.offers,
                e2e.books,
                e2e.applied_per_second(),
                e2e.accepted_per_second(),
                ratio(e2e.applied_per_second(), e2e.accepted_per_second())
            );
        }
        let _ = writeln!(
            out,
            "- Per level the worker is paused (`SIGSTOP`) while the API accepts, so that both sides only publish; the broker keeps the offers, and the worker applies them before the next measurement. The end-to-end accepted rate above is the API's with the worker applying at the same time."
        );
        let _ = writeln!(
            out,
            "- The API publishes through the bus-rabbitmq channel pool (`publisher_channels`, default 64), one unconfirmed publish per channel, so up to 64 requests have their confirm in flight at once; the raw side has one channel per task."
        );
        let _ = writeln!(
            out,
            "- Where the CPU of one offer goes, process by process, and what bounds the end-to-end rate: [write-path.md](write-path.md)."
        );
        let _ = writeln!(
            out,
            "- Everything (load generator, API, worker, RabbitMQ, PostgreSQL) shares the same {} CPUs, so every figure here is a lower bound of what separate machines would give, and the raw figures are measured under the same sharing (the API idle and the worker paused at that time).",
            self.machine.cpus
        );
        out.push_str(&self.targets());
        out
    }

    /// The write-side targets, each against what this run measured.
    fn targets(&self) -> String {
        let mut out = String::from(
            "
### Targets

",
        );
        let met = |ok: bool| if ok { "met" } else { "not met" };
        let below: Vec<String> = self
            .levels
            .iter()
            .filter(|(api, raw)| api.per_second() < 0.8 * raw.per_second())
            .map(|(api, raw)| {
                format!(
                    "{} ({})",
                    api.concurrency,
                    ratio(api.per_second(), raw.per_second())
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "- accepted `POST /offer` >= 80% of raw confirmed publishes: {} of {} levels; below at concurrency {}. What one request adds to a publish is in [write-path.md](write-path.md#accepted-post-offer-at-concurrency-1): thread hand-offs between the HTTP server, lapin's I/O thread and the answer, each waiting for a CPU the load generator and the broker also use.",
            self.levels.len() - below.len(),
            self.levels.len(),
            if below.is_empty() { "none".to_owned() } else { below.join(", ") }
        );
        if let Some(((api, raw), (api_cpu, raw_cpu))) = self
            .levels
            .iter()
            .zip(&self.cpu)
            .find(|((api, _), _)| api.concurrency == 64)
        {
            let _ = writeln!(
                out,
                "  At concurrency 64 the API side used {:.0} µs of CPU per accepted offer (API process {}, load generator {}, RabbitMQ {}) against {:.0} µs per raw publish (load generator {}, RabbitMQ {}). With every process on the same {} CPUs, and the CPUs saturated at this level, the rate ratio can be at most about the inverse of the CPU ratio, {}; measured {}. The HTTP hop (the API process and the load generator's HTTP client) is what the raw side does not pay.",
                api_cpu.total(),
                micros(api_cpu.api),
                micros(api_cpu.generator),
                micros(api_cpu.broker),
                raw_cpu.total(),
                micros(raw_cpu.generator),
                micros(raw_cpu.broker),
                self.machine.cpus,
                ratio(raw_cpu.total(), api_cpu.total()),
                ratio(api.per_second(), raw.per_second()),
            );
        }
        if let Some((api, raw)) = self.levels.iter().find(|(api, _)| api.concurrency == 64) {
            let _ = writeln!(
                out,
                "- p99 under 10 ms at 64 connections: {:.2} ms, {} (the raw publishes' own p99 at 64 is {:.2} ms; with 64 requests in flight the mean latency is 64 / rate, {:.2} ms for the API and {:.2} ms raw).",
                api.p99_ms,
                met(api.p99_ms < 10.0),
                raw.p99_ms,
                64_000.0 / api.per_second(),
                64_000.0 / raw.per_second()
            );
        }
        if let Some(e2e) = &self.end_to_end {
            let _ = writeln!(
                out,
                "- >= 5,000 offers applied per second end to end: {:.0}/s, {}. Bound: about 1.2 ms of CPU per applied offer over all processes (PostgreSQL about 0.5 ms, RabbitMQ about 0.33 ms for two confirmed publishes, two deliveries and two acks, the worker about 0.28 ms), i.e. at most about 1,650/s on {} CPUs; RabbitMQ's share alone exceeds the 0.4 ms per offer that 5,000/s would allow. Profile: [write-path.md](write-path.md).",
                e2e.applied_per_second(),
                met(e2e.applied_per_second() >= 5_000.0),
                self.machine.cpus
            );
        }
        let limit = 64 * 1024;
        let under = |kib: Option<u64>| kib.is_some_and(|kib| kib < limit);
        let _ = writeln!(
            out,
            "- API and worker under 64 MiB peak RSS: {} and {}, {}.",
            mib(self.api_peak_rss_kib),
            mib(self.worker_peak_rss_kib),
            met(under(self.api_peak_rss_kib) && under(self.worker_peak_rss_kib))
        );
        out
    }

    /// The whole `docs/performance.md`.
    pub fn markdown(&self, charts: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Performance\n");
        let _ = writeln!(
            out,
            "Produced by the `benchmark` crate, figures written by the program itself (not edited by hand). \
             The API (`marketplace serve --bus rabbitmq`, release build, `RUST_LOG=warn`, every other flag at its default) \
             is measured side by side with its raw limit: persistent, mandatory publishes with publisher confirms \
             straight through lapin on a durable queue, one confirm channel per task, one publish in flight per task. \
             Ratios are API / raw at the same concurrency.\n"
        );
        let _ = writeln!(out, "## Run\n");
        let _ = writeln!(out, "- command: `{}`", self.command);
        let _ = writeln!(out, "- date: {}", self.date);
        let _ = writeln!(
            out,
            "- machine: {} CPUs ({}), {:.1} GiB memory; PostgreSQL and RabbitMQ on loopback on the same machine",
            self.machine.cpus, self.machine.cpu_model, self.machine.memory_gib
        );
        let _ = writeln!(
            out,
            "- method: closed loop (each task sends, awaits the answer, sends again); latency is per request; \
             the per-level offers name one book and seller; end to end, the offers are spread evenly over the books \
             of a `marketplace seed` catalogue (each already carrying 2 offers), and the run is timed from the first send until \
             `SELECT count(*) FROM offers` has every offer and every book they name has its cheapest in-stock offer as \
             `books.offer_id`.\n"
        );
        let _ = writeln!(out, "## Results\n");
        out.push_str(&self.tables());
        if charts {
            let _ = writeln!(out, "\n![throughput](performance-throughput.png)\n");
            let _ = writeln!(out, "![p99 latency](performance-p99.png)\n");
        }
        let _ = writeln!(out, "\n## Analysis\n");
        out.push_str(&self.analysis());
        out
    }

    /// Writes `performance-throughput.png` and `performance-p99.png` in `dir`.
    pub fn charts(&self, dir: &Path) -> Result<()> {
        let lines = |value: fn(&LevelResult) -> f64| {
            let side =
                |label: &str,
                 color: RGBColor,
                 pick: fn(&(LevelResult, LevelResult)) -> &LevelResult| Series {
                    label: label.to_owned(),
                    points: self
                        .levels
                        .iter()
                        .map(|level| (pick(level).concurrency, value(pick(level))))
                        .collect(),
                    color: color.to_rgba(),
                    thin: false,
                };
            [
                side("API POST /offer", RED, |(api, _)| api),
                side("raw lapin confirmed publish", BLUE, |(_, raw)| raw),
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
            &lines(LevelResult::per_second),
        )?;
        charts::draw(
            &dir.join("performance-p99.png"),
            &chart("p99 latency vs concurrency", "p99 latency (ms)"),
            &lines(|level| level.p99_ms),
        )
    }
}
