//! The operational endpoints every service serves beside its own routes:
//!
//! - `GET /healthz`: the process is alive and its HTTP server answers. Never depends
//!   on other systems.
//! - `GET /readyz`: every readiness [`Probe`](crate::Probe) passes; `503` otherwise, and
//!   from the moment shutdown begins, so load balancers stop sending work. The JSON body
//!   names each probe and why it failed.
//! - `GET /metrics`: Prometheus text format.
//!
//! Every request runs in a span that continues the caller's `traceparent`, and is counted in `http_requests_total{method, route, status}` and timed
//! in `http_request_duration_seconds{method, route}`, by route pattern (not raw path,
//! which would make one series per order id).

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use actix_web::{
    HttpResponse,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    web,
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::probe::{Probe, ProbeResult, check_all};

/// Shared state of the operational endpoints.
#[derive(Debug)]
pub(crate) struct Ops {
    pub(crate) service: &'static str,
    pub(crate) probes: Arc<RwLock<Vec<Probe>>>,
    pub(crate) metrics: PrometheusHandle,
    /// Cancelled when shutdown begins: readiness turns to 503 at once.
    pub(crate) draining: CancellationToken,
    pub(crate) probe_deadline: Duration,
}

#[derive(Serialize)]
struct Readiness {
    service: &'static str,
    status: &'static str,
    checks: Vec<ProbeResult>,
}

/// Registers `/healthz`, `/readyz` and `/metrics`.
pub(crate) fn ops_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics));
}

async fn healthz(ops: web::Data<Ops>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "service": ops.service, "status": "alive" }))
}

async fn readyz(ops: web::Data<Ops>) -> HttpResponse {
    if ops.draining.is_cancelled() {
        return HttpResponse::ServiceUnavailable().json(Readiness {
            service: ops.service,
            status: "shutting down",
            checks: Vec::new(),
        });
    }
    let probes = match ops.probes.read() {
        Ok(probes) => probes.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    let checks = check_all(&probes, ops.probe_deadline).await;
    let ready = checks.iter().all(|c| c.ok);
    let body = Readiness { service: ops.service, status: if ready { "ready" } else { "not ready" }, checks };
    if ready { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}

async fn metrics(ops: web::Data<Ops>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(ops.metrics.render())
}

/// Middleware: counts and times each request by method, route pattern and status.
pub(crate) async fn record_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    use tracing::Instrument as _;
    let started = std::time::Instant::now();
    let method = req.method().to_string();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_string());
    let span =
        tracing::info_span!("http request", otel.kind = "server", http.method = %method, http.route = %route);
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    crate::telemetry::set_parent_from(&span, header("traceparent"), header("tracestate"));
    let response = next.call(req).instrument(span).await?;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed());
    Ok(response)
}
