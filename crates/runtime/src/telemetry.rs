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
//! the current span a child of an incoming `traceparent`.

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
        tracing_subscriber::fmt::layer()
            .with_writer(stdout)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(stdout).boxed()
    };

    let provider = tracer_provider(service, args.otlp_endpoint.as_deref())?;
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
    opentelemetry::global::set_tracer_provider(provider.clone());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = Some(provider);

    let installed = tracing_subscriber::registry().with(fmt).with(otel).with(filter).try_init();
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
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&context, &mut carrier));
    carrier.remove("traceparent")
}

/// Makes `span` a child of an incoming W3C trace context (`traceparent` and, when
/// present, `tracestate`). Without a valid `traceparent` the span starts a new trace.
pub fn set_parent_from(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let Some(traceparent) = traceparent else { return };
    let mut carrier = std::collections::HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    if let Some(tracestate) = tracestate {
        carrier.insert("tracestate".to_string(), tracestate.to_string());
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    if let Err(e) = span.set_parent(parent) {
        tracing::debug!(error = %e, "could not attach the incoming trace context");
    }
}
