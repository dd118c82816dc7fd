//! The process-wide Prometheus recorder behind `GET /metrics`.
//!
//! Services record with the `metrics` crate's macros (`counter!`, `gauge!`,
//! `histogram!`); this module installs the recorder once per process and hands out the
//! handle that renders the text format. Histograms have buckets: [`SECONDS_BUCKETS`]
//! for those in seconds, [`COUNT_BUCKETS`] for the others.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The buckets of every histogram in seconds (`*_seconds`): 0.5 ms to 10 minutes (a
/// projection catching up, a state restore).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    300.0, 600.0,
];

/// The buckets of every other histogram (counts: rows, records, batch sizes).
pub const COUNT_BUCKETS: &[f64] =
    &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0];

/// The handle of the process-wide recorder, installing it on first use.
///
/// When the embedding program installed another global recorder first, ours still
/// renders but records nothing; that is logged once.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = builder().build_recorder();
            let handle = recorder.handle();
            if ::metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will stay empty");
            }
            handle
        })
        .clone()
}

/// Histograms are rendered as Prometheus histograms (with buckets, so that quantiles
/// aggregate across pods), not as summaries.
fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets(COUNT_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS))
        .expect("the bucket lists are not empty")
}
