//! The process-wide Prometheus recorder behind `GET /metrics`.
//!
//! Services record with the `metrics` crate's macros (`counter!`, `gauge!`,
//! `histogram!`); this module installs the recorder once per process and hands out the
//! handle that renders the text format.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The handle of the process-wide recorder, installing it on first use.
///
/// When the embedding program installed another global recorder first, ours still
/// renders but records nothing; that is logged once.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if ::metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will stay empty");
            }
            handle
        })
        .clone()
}
