//! Logging through `tracing`, set up once per process, and the export of
//! its spans over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set ([`otlp`]).
//!
//! Every request and every message handled is a span of a W3C trace (see
//! `http/edge/trace.rs` and the `handle` span of `bus_core`): the span's
//! `trace_id`, `span_id` and `parent_span_id` fields are on every line
//! logged inside it, and the exported spans carry the same ids.

pub mod otlp;

use tracing_subscriber::{
    fmt,
    layer::{Identity, SubscriberExt},
    registry::Registry,
    util::SubscriberInitExt,
    EnvFilter, Layer,
};

use crate::config::LogFormat;

/// What is logged when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn";

/// The process's telemetry, once installed: flushes the span exporter (if
/// any) when shut down or dropped.
#[derive(Debug, Default)]
#[must_use = "dropping it flushes and stops the span exporter"]
pub struct Telemetry {
    exporter: Option<otlp::Exporter>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exports_spans(&self) -> bool {
        self.exporter.is_some()
    }

    /// Sends the spans not exported yet, then stops the exporter.
    pub fn shutdown(mut self) {
        if let Some(exporter) = self.exporter.take() {
            exporter.shutdown();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(exporter) = self.exporter.take() {
            exporter.shutdown();
        }
    }
}

/// Installs the global subscriber: level from `RUST_LOG` (default
/// [`DEFAULT_FILTER`]), text or JSON lines on stdout, and the OTLP span
/// exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
pub fn init(format: LogFormat) -> Telemetry {
    install(format, false)
}

/// As [`init`], on standard error: for a tool whose standard output is its
/// report (`marketplace dead-letters`).
pub fn init_on_stderr(format: LogFormat) -> Telemetry {
    install(format, true)
}

type Boxed = Box<dyn Layer<tracing_subscriber::layer::Layered<EnvFilter, Registry>> + Send + Sync>;

fn install(format: LogFormat, on_stderr: bool) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let lines: Boxed = match (format, on_stderr) {
        (LogFormat::Text, false) => fmt::layer().boxed(),
        (LogFormat::Json, false) => fmt::layer().json().boxed(),
        (LogFormat::Text, true) => fmt::layer().with_writer(std::io::stderr).boxed(),
        (LogFormat::Json, true) => fmt::layer().json().with_writer(std::io::stderr).boxed(),
    };
    let (exporter, export, failure) = match otlp::Exporter::from_env() {
        Ok(Some((exporter, layer))) => (Some(exporter), layer, None),
        Ok(None) => (None, Identity::new().boxed(), None),
        Err(error) => (None, Identity::new().boxed(), Some(error)),
    };
    let telemetry = Telemetry { exporter };
    if let Err(error) = tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .with(export)
        .try_init()
    {
        eprintln!("logging already initialised: {error}");
    }
    if let Some(error) = failure {
        tracing::error!(%error, "spans are not exported: the OTLP exporter could not be built");
    } else if telemetry.exports_spans() {
        tracing::info!("spans exported over OTLP");
    }
    telemetry
}
