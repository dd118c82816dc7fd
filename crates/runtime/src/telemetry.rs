//! Logging and tracing set-up.
//!
//! Logs go to standard output through `tracing-subscriber`: one JSON object per line in
//! production (what log collectors parse), human-readable lines on a terminal. The level
//! comes from `RUST_LOG`. Messages logged through the `log` crate (librdkafka's, for
//! one) are captured too. When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also
//! exported over OTLP/gRPC, and the W3C `traceparent` propagator is installed so that
//! trace context can cross HTTP, the outbox and Kafka headers.
//!
//! Spans get OpenTelemetry trace and span ids even when nothing is exported, so
//! [`current_traceparent`] always has a context to hand on; [`set_parent_from`] makes
//! the current span a child of an incoming `traceparent` (both through
//! [`orders_trace_context`], which the libraries use for Kafka records and outbox rows).
//! A JSON log line written inside a span carries that span's `trace_id` and `span_id`,
//! so that logs and traces meet.

use std::io::IsTerminal;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer, Registry, layer::SubscriberExt, util::SubscriberInitExt};

use crate::{
    Error, Result,
    config::{LogFormat, RuntimeArgs},
};

/// Keeps telemetry alive; dropping it flushes and stops trace export.
/// Hold it in `main` until the very end.
#[must_use = "dropping the guard stops trace export"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("flushing traces failed: {e}");
        }
    }
}

/// Installs the global `tracing` subscriber for `service`.
///
/// Fails on an invalid log filter or OTLP endpoint. When a global subscriber is already
/// installed (several services started in one test process), the existing one is kept.
pub fn init(service: &'static str, args: &RuntimeArgs) -> Result<TelemetryGuard> {
    let filter = log_filter(args)?;
    let json = json_logs(args, std::io::stdout().is_terminal());
    // Written with a progress bar hidden, when one shows (`projector rebuild` on a terminal).
    let stdout = || crate::progress::Suspending(std::io::stdout());
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = if json {
        let json = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false);
        tracing_subscriber::fmt::layer()
            .with_writer(stdout)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(WithTraceIds(json))
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(stdout).boxed()
    };

    let provider = tracer_provider(service, args.otlp_endpoint.as_deref())?;
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = Some(provider);

    // The ids are noted when a span is first entered, before any line inside it is written.
    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .with(TraceIdsLayer::default())
        .with(filter)
        .try_init();
    if installed.is_err() {
        tracing::debug!("a global tracing subscriber is already installed; keeping it");
    }
    Ok(TelemetryGuard { provider })
}

/// Installs a `tracing` subscriber for a tool run by hand (a subcommand that prints its
/// results on standard output): log lines, progress lines included, go to standard
/// error, JSON or human-readable as `LOG_FORMAT` says (`auto`: readable on a terminal);
/// nothing is exported. Keeps a subscriber already installed.
pub fn init_tool(args: &RuntimeArgs) -> Result<()> {
    let filter = log_filter(args)?;
    let json = json_logs(args, std::io::stderr().is_terminal());
    let fmt = tracing_subscriber::fmt::layer().with_writer(|| crate::progress::Suspending(std::io::stderr()));
    let fmt: Box<dyn Layer<Registry> + Send + Sync> =
        if json { fmt.json().flatten_event(true).boxed() } else { fmt.boxed() };
    let _ = tracing_subscriber::registry().with(fmt).with(filter).try_init();
    Ok(())
}

/// `RUST_LOG` as a filter.
fn log_filter(args: &RuntimeArgs) -> Result<EnvFilter> {
    EnvFilter::try_new(&args.log_filter)
        .map_err(|e| Error::Config(format!("RUST_LOG=`{}` is not a valid log filter: {e}", args.log_filter)))
}

/// Whether log lines are JSON: as `LOG_FORMAT` says, or (`auto`) unless they go to a terminal.
fn json_logs(args: &RuntimeArgs, terminal: bool) -> bool {
    match args.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !terminal,
    }
}

/// A tracer provider that exports to `endpoint` when there is one, and otherwise only
/// gives spans their ids.
fn tracer_provider(service: &'static str, endpoint: Option<&str>) -> Result<SdkTracerProvider> {
    let builder =
        SdkTracerProvider::builder().with_resource(Resource::builder().with_service_name(service).build());
    let Some(endpoint) = endpoint else { return Ok(builder.build()) };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| Error::Telemetry(format!("OTEL_EXPORTER_OTLP_ENDPOINT=`{endpoint}`: {e}")))?;
    Ok(builder.with_batch_exporter(exporter).build())
}

/// The W3C `traceparent` of the current span, when it has a valid trace context.
pub fn current_traceparent() -> Option<String> {
    orders_trace_context::traceparent_of(&tracing::Span::current())
}

/// Makes `span` a child of an incoming W3C trace context (`traceparent` and, when
/// present, `tracestate`). Without a valid `traceparent` the span starts a new trace.
pub fn set_parent_from(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    orders_trace_context::set_parent(span, traceparent, tracestate);
}

/// A span's OpenTelemetry ids, kept in its extensions by [`TraceIdsLayer`] for the log
/// lines written inside it.
#[derive(Debug, Clone)]
struct TraceIds {
    trace_id: String,
    span_id: String,
}

/// Notes each span's trace and span ids when it is first entered (after its parent,
/// remote or local, is settled: [`set_parent_from`] is called before entering).
#[derive(Default)]
struct TraceIdsLayer {
    dispatch: std::sync::OnceLock<tracing::dispatcher::WeakDispatch>,
}

impl<S> Layer<S> for TraceIdsLayer
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if span.extensions().get::<TraceIds>().is_some() {
            return;
        }
        drop(span);
        let Some(dispatch) = self.dispatch.get().and_then(tracing::dispatcher::WeakDispatch::upgrade) else {
            return;
        };
        let Some(context) = tracing_opentelemetry::get_otel_context(id, &dispatch) else { return };
        use opentelemetry::trace::TraceContextExt as _;
        let span_context = context.span().span_context().clone();
        if !span_context.is_valid() {
            return;
        }
        let ids = TraceIds {
            trace_id: span_context.trace_id().to_string(),
            span_id: span_context.span_id().to_string(),
        };
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(ids);
        }
    }
}

/// A JSON event format that adds `trace_id` and `span_id` of the current span.
struct WithTraceIds<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(ctx, tracing_subscriber::fmt::format::Writer::new(&mut line), event)?;
        let ids = ctx.lookup_current().and_then(|span| span.extensions().get::<TraceIds>().cloned());
        match (ids, line.trim_end().strip_suffix('}')) {
            (Some(ids), Some(object)) => writeln!(
                writer,
                "{object},\"trace_id\":\"{}\",\"span_id\":\"{}\"}}",
                ids.trace_id, ids.span_id
            ),
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_inside_a_span_carry_its_trace_and_span_ids() {
        let captured = Captured::default();
        let writer = captured.clone();
        let provider = SdkTracerProvider::builder().build();
        let json = tracing_subscriber::fmt::format().json().flatten_event(true);
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(TraceIdsLayer::default())
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(move || writer.clone())
                    .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                    .event_format(WithTraceIds(json)),
            );
        let sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside");
            let span = tracing::info_span!("request");
            set_parent_from(&span, Some(sent), None);
            span.in_scope(|| tracing::info!(answer = 42, "inside"));
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].get("trace_id").is_none(), "no span, no ids: {text}");
        assert_eq!(lines[1]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736", "{text}");
        assert_eq!(lines[1]["span_id"].as_str().map(str::len), Some(16), "{text}");
        assert_ne!(lines[1]["span_id"], "00f067aa0ba902b7", "the span's own id, not its parent's");
        assert_eq!(lines[1]["answer"], 42);
    }
}
