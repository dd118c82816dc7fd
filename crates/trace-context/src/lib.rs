//! W3C trace context (`traceparent`, `tracestate`) across the hops that are not calls:
//! a Kafka record's headers, an outbox row's. A `tracing` span of the receiving side
//! either continues the sender's trace ([`set_parent`]: one record handled, one
//! message published) or, when it handles many records at once, links to each of
//! theirs ([`add_link`]: a batch is not the child of any one record). What a span
//! hands on is [`traceparent_of`].
//!
//! The spans are OpenTelemetry spans through `tracing-opentelemetry`: these functions
//! do nothing (and return `None`) unless its layer is installed. The format is always
//! W3C Trace Context, whatever global propagator is set.
//!
//! ```
//! use tracing_subscriber::layer::SubscriberExt as _;
//! use opentelemetry::trace::TracerProvider as _;
//!
//! let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
//! let subscriber = tracing_subscriber::registry()
//!     .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("example")));
//! tracing::subscriber::with_default(subscriber, || {
//!     let sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
//!     let span = tracing::info_span!("handle");
//!     orders_trace_context::set_parent(&span, Some(sent), None);
//!     let handed_on = orders_trace_context::traceparent_of(&span).unwrap();
//!     // Same trace, a span of its own.
//!     assert!(handed_on.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
//!     assert_ne!(handed_on, sent);
//! });
//! ```

use std::collections::HashMap;

use opentelemetry::{
    Context,
    propagation::TextMapPropagator as _,
    trace::{SpanContext, TraceContextExt as _},
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The header (and outbox header) names.
pub const TRACEPARENT: &str = "traceparent";
/// See [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

/// The most links one span takes: OpenTelemetry's default limit of links per span (the
/// SDK drops any beyond it), so a span of a batch links to its first `MAX_LINKS` records.
pub const MAX_LINKS: usize = 128;

/// The remote span context a `traceparent` (and `tracestate`) describe, when valid.
pub fn remote_context(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<SpanContext> {
    let traceparent = traceparent?;
    let mut carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    if let Some(tracestate) = tracestate {
        carrier.insert(TRACESTATE.to_string(), tracestate.to_string());
    }
    let context = TraceContextPropagator::new().extract(&carrier);
    let span = context.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// Makes `span` a child of the sender's span (`traceparent`, `tracestate`); without a
/// valid `traceparent`, `span` keeps its place (a new trace, or its local parent's).
/// Call it before the span is entered for the first time.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if let Some(remote) = remote_context(traceparent, tracestate) {
        let _ = span.set_parent(Context::new().with_remote_span_context(remote));
    }
}

/// Links `span` to the sender's span: for a span that handles many records, each with
/// a trace of its own. An invalid or missing `traceparent` adds nothing.
pub fn add_link(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if let Some(remote) = remote_context(traceparent, tracestate) {
        span.add_link(remote);
    }
}

/// The `traceparent` that hands `span` on (its trace id, its span id), when it has a
/// valid OpenTelemetry context.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The trace and span ids of `span` as lowercase hex (what log lines carry), when it
/// has a valid OpenTelemetry context.
pub fn ids_of(span: &tracing::Span) -> Option<(String, String)> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| (span_context.trace_id().to_string(), span_context.span_id().to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_traceparent_is_no_context() {
        assert!(remote_context(None, None).is_none());
        assert!(remote_context(Some("garbage"), None).is_none());
        assert!(
            remote_context(Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), None).is_none()
        );
        let valid =
            remote_context(Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), None).unwrap();
        assert_eq!(valid.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(valid.is_remote());
    }

    #[test]
    fn without_the_opentelemetry_layer_nothing_is_handed_on() {
        let span = tracing::info_span!("no layer");
        set_parent(&span, Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), None);
        assert_eq!(traceparent_of(&span), None);
        assert_eq!(ids_of(&span), None);
    }
}
