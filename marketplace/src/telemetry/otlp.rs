//! Span export over OTLP (HTTP/protobuf), installed only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set; the standard `OTEL_*` variables
//! tune it (`OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_BSP_SCHEDULE_DELAY`...).
//!
//! The exported spans use the ids the logs show. A span carrying
//! `trace_id` (and `span_id`, `parent_span_id`) fields — the API's
//! `request` span, the bus's `handle` and `publish` spans — is exported with
//! that trace id, that span id (a new one without `span_id`) and, as its
//! remote parent, `parent_span_id`: the caller's span for a request, the
//! span that sent the message for a handler. So one request's trace, from
//! the API through the command's handler to the subscribers of its events,
//! is one trace in the collector, with the trace id of the request's
//! `traceparent`. A `trace_flags` field without the sampled bit (a
//! `traceparent` ending in `-00`) marks that parent as not sampled, and the
//! SDK's parent-based sampler drops the span and its children.

use std::{
    cell::{Cell, RefCell},
    sync::OnceLock,
};

use opentelemetry::{
    trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider,
    },
    Context, ContextGuard,
};
use opentelemetry_sdk::{
    trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider},
    Resource,
};
use tracing::{
    dispatcher::WeakDispatch,
    field::{Field, Visit},
    span, Dispatch, Subscriber,
};
use tracing_subscriber::{layer::Context as LayerContext, registry::LookupSpan, Layer};

/// The variable whose presence turns the export on.
pub const ENDPOINT_VARIABLE: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// The service name when `OTEL_SERVICE_NAME` is not set.
pub const DEFAULT_SERVICE_NAME: &str = "marketplace";

/// Why the exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ExporterError(#[from] opentelemetry_otlp::ExporterBuildError);

/// A layer of the process's subscriber.
pub type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync>;

/// The running exporter: its batches are sent from a thread of its own.
#[derive(Debug)]
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the exporter and the layer
    /// that feeds it; `None` without it, so that nothing is recorded for
    /// export.
    pub fn from_env<S>() -> Result<Option<(Self, BoxedLayer<S>)>, ExporterError>
    where
        S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        if std::env::var_os(ENDPOINT_VARIABLE).is_none_or(|value| value.is_empty()) {
            return Ok(None);
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(DEFAULT_SERVICE_NAME);
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_id_generator(OurIds)
            .with_resource(resource.build())
            .build();
        let layer = export_layer(provider.tracer("marketplace"));
        Ok(Some((Self { provider }, layer)))
    }

    /// Exports the spans not sent yet and stops.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("span exporter shutdown: {error}");
        }
    }
}

/// The OpenTelemetry layer of `tracer` between the two that give it our
/// ids (one layer: a `Vec` of layers would not tell them the dispatcher).
fn export_layer<S>(tracer: opentelemetry_sdk::trace::Tracer) -> BoxedLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    Box::new(
        AttachIds
            .and_then(tracing_opentelemetry::layer().with_tracer(tracer))
            .and_then(StartWithIds::default()),
    )
}

/// The ids a span declares in its fields.
#[derive(Debug, Clone, Copy, Default)]
struct SpanIds {
    trace_id: Option<u128>,
    span_id: Option<u64>,
    parent_span_id: Option<u64>,
    trace_flags: Option<u8>,
}

impl Visit for SpanIds {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "trace_id" => self.trace_id = u128::from_str_radix(value, 16).ok(),
            "span_id" => self.span_id = u64::from_str_radix(value, 16).ok(),
            "parent_span_id" => self.parent_span_id = u64::from_str_radix(value, 16).ok(),
            "trace_flags" => self.trace_flags = u8::from_str_radix(value, 16).ok(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if matches!(
            field.name(),
            "trace_id" | "span_id" | "parent_span_id" | "trace_flags"
        ) {
            self.record_str(field, &format!("{value:?}"));
        }
    }
}

thread_local! {
    /// The ids of the span being created on this thread, for [`OurIds`].
    static NEXT_IDS: Cell<Option<(u128, Option<u64>)>> = const { Cell::new(None) };
    /// Its remote parent, current while the OpenTelemetry layer reads it.
    static PARENT: RefCell<Option<ContextGuard>> = const { RefCell::new(None) };
}

/// Hands out the ids of [`NEXT_IDS`] when set, random ones otherwise.
#[derive(Debug, Default)]
struct OurIds;

impl IdGenerator for OurIds {
    fn new_trace_id(&self) -> TraceId {
        match NEXT_IDS.get() {
            Some((trace_id, _)) => TraceId::from(trace_id),
            None => RandomIdGenerator::default().new_trace_id(),
        }
    }

    fn new_span_id(&self) -> SpanId {
        match NEXT_IDS.get() {
            Some((_, Some(span_id))) => SpanId::from(span_id),
            _ => RandomIdGenerator::default().new_span_id(),
        }
    }
}

/// Before the OpenTelemetry layer sees a new span with a `trace_id`: makes
/// its remote parent current (none for a trace's first span) and its ids
/// the next ones handed out.
struct AttachIds;

impl<S: Subscriber> Layer<S> for AttachIds {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, _: &span::Id, _: LayerContext<'_, S>) {
        let mut ids = SpanIds::default();
        attrs.record(&mut ids);
        let Some(trace_id) = ids.trace_id else {
            return;
        };
        // Sampled unless the flags say otherwise.
        let flags = TraceFlags::new(ids.trace_flags.unwrap_or(1)) & TraceFlags::SAMPLED;
        let parent = match ids.parent_span_id {
            Some(parent) => Context::new().with_remote_span_context(SpanContext::new(
                TraceId::from(trace_id),
                SpanId::from(parent),
                flags,
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        PARENT.with(|guard| *guard.borrow_mut() = Some(parent.attach()));
        NEXT_IDS.set(Some((trace_id, ids.span_id)));
    }
}

/// After the OpenTelemetry layer: starts the span at once, while its ids
/// are the next ones, then forgets them.
#[derive(Default)]
struct StartWithIds {
    dispatch: OnceLock<WeakDispatch>,
}

impl<S: Subscriber> Layer<S> for StartWithIds {
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, _: &span::Attributes<'_>, id: &span::Id, _: LayerContext<'_, S>) {
        if NEXT_IDS.get().is_none() {
            return;
        }
        if let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) {
            let _ = tracing_opentelemetry::get_otel_context(id, &dispatch);
        }
        NEXT_IDS.set(None);
        PARENT.with(|guard| guard.borrow_mut().take());
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn spans_with_ids_are_exported_with_those_ids() {
        let provider = SdkTracerProvider::builder()
            .with_id_generator(OurIds)
            .build();
        let subscriber = tracing_subscriber::registry().with(export_layer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let child = tracing::info_span!(
                "handle",
                trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                span_id = "00f067aa0ba902b7",
                parent_span_id = "0102030405060708",
            );
            let context = child.context();
            let span = context.span();
            let ids = span.span_context();
            assert_eq!(
                ids.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert_eq!(ids.span_id().to_string(), "00f067aa0ba902b7");

            let root = tracing::info_span!(
                "request",
                trace_id = "0af7651916cd43dd8448eb211c80319c",
                span_id = "b7ad6b7169203331",
            );
            let inner = root.in_scope(|| tracing::info_span!("query"));
            let context = inner.context();
            let span = context.span();
            let ids = span.span_context();
            assert_eq!(
                ids.trace_id().to_string(),
                "0af7651916cd43dd8448eb211c80319c"
            );
            assert_ne!(ids.span_id().to_string(), "b7ad6b7169203331");
        });
    }

    #[test]
    fn spans_of_a_trace_that_is_not_sampled_are_not_sampled() {
        let provider = SdkTracerProvider::builder()
            .with_id_generator(OurIds)
            .build();
        let subscriber = tracing_subscriber::registry().with(export_layer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let sampled = |flags: &str| {
                let span = tracing::info_span!(
                    "handle",
                    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                    span_id = "00f067aa0ba902b7",
                    parent_span_id = "0102030405060708",
                    trace_flags = flags,
                );
                let inner = span.in_scope(|| tracing::info_span!("query"));
                let outer = span.context().span().span_context().is_sampled();
                let inner = inner.context().span().span_context().is_sampled();
                (outer, inner)
            };
            assert_eq!(sampled("01"), (true, true));
            assert_eq!(sampled("00"), (false, false));
        });
    }
}
