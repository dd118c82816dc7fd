//! The operational endpoints every service serves beside its own routes:
//!
//! - `GET /healthz`: the process is alive and its HTTP server answers. Never depends
//!   on other systems.
//! - `GET /readyz`: every readiness [`Probe`](crate::Probe) passes; `503` otherwise, and
//!   from the moment shutdown begins, so load balancers stop sending work. The JSON body
//!   names each probe and why it failed. The gauge `service_ready` keeps its answer
//!   (1 or 0) for alerting.
//! - `GET /metrics`: Prometheus text format.
//!
//! A public API may keep these off its own port ([`Runtime::serve_api`] beside
//! [`Runtime::serve_admin`]): its port then serves `/healthz` and a `/readyz` without
//! details only. With an admin token (`ADMIN_TOKEN_FILE`), `/metrics`, the details of
//! `/readyz` and an admin port's own API answer `401` without `Authorization: Bearer
//! <token>` (compared in constant time); `/healthz` and `/readyz`'s status stay open to
//! the orchestrator's probes.
//!
//! [`Runtime::serve_api`]: crate::Runtime::serve_api
//! [`Runtime::serve_admin`]: crate::Runtime::serve_admin
//!
//! Every request runs in a span that continues the caller's `traceparent`, and is
//! counted in `http_requests_total{method, route, status}` and timed in
//! `http_request_duration_seconds{method, route}`. Every label is bounded whatever the
//! client sends: `route` is the matched route pattern (not the raw path, which would
//! make one series per order id) or `unmatched`; `method` is one of the nine standard
//! methods or `OTHER`; `status` is the status the server chose.
//!
//! Every request also has a deadline (`HTTP_REQUEST_TIMEOUT`): a handler still running
//! when it passes is dropped and the client gets `503` with `Retry-After` as a problem
//! document (`/problems/deadline-exceeded`). Dropping a handler only stops the wait: a
//! statement it had sent keeps running on the server until PostgreSQL's own
//! `statement_timeout` ends it (see [`crate::postgres`]), so keep that below this
//! deadline's order of magnitude.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use actix_web::{
    HttpMessage as _, HttpResponse,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    middleware::Next,
    web,
};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Secret,
    probe::{Probe, ProbeResult, check_all},
};

/// Shared state of the operational endpoints.
#[derive(Debug)]
pub(crate) struct Ops {
    pub(crate) service: &'static str,
    pub(crate) probes: Arc<RwLock<Vec<Probe>>>,
    pub(crate) metrics: PrometheusHandle,
    /// Cancelled when shutdown begins: readiness turns to 503 at once.
    pub(crate) draining: CancellationToken,
    pub(crate) probe_deadline: Duration,
    /// What the server serves.
    pub(crate) exposure: Exposure,
    /// The token the admin endpoints ask for, if any.
    pub(crate) admin_token: Option<Secret>,
}

/// What one HTTP server of a service serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exposure {
    /// The service's routes and the operational endpoints on one port; the admin token
    /// guards `/metrics` and the details of `/readyz`.
    Both,
    /// A public API alone: its routes, `/healthz`, and `/readyz` without details.
    Api,
    /// The admin port: the operational endpoints and an admin API; the admin token
    /// guards all but `/healthz` and `/readyz`'s status.
    Admin,
}

impl Exposure {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::Both => "API and operations",
            Self::Api => "API",
            Self::Admin => "operations (admin)",
        }
    }

    /// Whether `path` asks for the admin token (when there is one).
    fn guarded(self, path: &str) -> bool {
        match self {
            Self::Both => path == "/metrics",
            Self::Api => false,
            Self::Admin => !matches!(path, "/healthz" | "/readyz"),
        }
    }
}

/// Set on a request that carried the admin token.
#[derive(Debug, Clone, Copy)]
struct AdminCaller;

/// The answer of `/healthz`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// The service's name.
    service: &'static str,
    /// Always `alive`.
    status: &'static str,
}

/// The answer of `/readyz`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Readiness {
    /// The service's name.
    service: &'static str,
    /// `ready`, `not ready` or `shutting down`.
    status: &'static str,
    /// Each readiness probe's outcome (none while shutting down, on a public API's own
    /// port, and without the admin token when there is one).
    checks: Vec<ProbeResult>,
}

/// Registers `/healthz`, `/readyz` and (but on a public API's own server) `/metrics`.
pub(crate) fn ops_routes(cfg: &mut web::ServiceConfig, exposure: Exposure) {
    cfg.route("/healthz", web::get().to(healthz)).route("/readyz", web::get().to(readyz));
    if exposure != Exposure::Api {
        cfg.route("/metrics", web::get().to(metrics));
    }
}

/// Middleware: with an admin token configured, a request to a guarded path without it
/// gets `401` (problem+json, `WWW-Authenticate: Bearer realm="admin"`); one with it is
/// marked, so that `/readyz` shows its details.
pub(crate) async fn guard_admin<B: MessageBody + 'static>(
    ops: web::Data<Ops>,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    if let Some(token) = &ops.admin_token {
        let given = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // The path as the router matches it (percent-decoded): `/%6Detrics` is `/metrics`.
        let path = req.match_info().as_str().to_string();
        if given.is_some_and(|given| same(given.trim().as_bytes(), token.expose().as_bytes())) {
            req.extensions_mut().insert(AdminCaller);
        } else if ops.exposure.guarded(&path) {
            return Err(AdminUnauthorized.into());
        }
    }
    next.call(req).await
}

/// Whether `a` and `b` are equal, in a time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An admin endpoint without the admin token: `401`.
#[derive(Debug, thiserror::Error)]
#[error("this admin endpoint asks for the admin token (Authorization: Bearer <token>)")]
struct AdminUnauthorized;

impl actix_web::ResponseError for AdminUnauthorized {
    fn status_code(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::UNAUTHORIZED
    }

    fn error_response(&self) -> HttpResponse {
        crate::problem::Problem::new(
            self.status_code(),
            "unauthenticated",
            "The request is not authenticated",
            self.to_string(),
        )
        .response(|r| {
            r.insert_header(("WWW-Authenticate", "Bearer realm=\"admin\""));
        })
    }
}

/// Liveness: the process runs and its HTTP server answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
pub(crate) async fn healthz(ops: web::Data<Ops>) -> HttpResponse {
    HttpResponse::Ok().json(Health { service: ops.service, status: "alive" })
}

/// `service_ready`: 1 while every probe passes, else 0, as of the last `/readyz` (which
/// Kubernetes asks every few seconds).
pub(crate) const READY: &str = "service_ready";

/// Readiness: every probe passes (the databases, the brokers and the topics it needs).
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready", body = Readiness),
    (status = 503, description = "Not ready, or shutting down; the failed probes say why", body = Readiness),
))]
pub(crate) async fn readyz(ops: web::Data<Ops>, req: actix_web::HttpRequest) -> HttpResponse {
    if ops.draining.is_cancelled() {
        metrics::gauge!(READY).set(0.0);
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
    let mut checks = check_all(&probes, ops.probe_deadline).await;
    let ready = checks.iter().all(|c| c.ok);
    metrics::gauge!(READY).set(if ready { 1.0 } else { 0.0 });
    // The details (what is down, and why) are the operators': not on a public API's own
    // port, and behind the admin token when there is one.
    let details = match ops.exposure {
        Exposure::Api => false,
        _ => ops.admin_token.is_none() || req.extensions().get::<AdminCaller>().is_some(),
    };
    if !details {
        checks.clear();
    }
    let body = Readiness { service: ops.service, status: if ready { "ready" } else { "not ready" }, checks };
    if ready { HttpResponse::Ok().json(body) } else { HttpResponse::ServiceUnavailable().json(body) }
}

/// The service's metrics, in Prometheus' text format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses(
    (status = 200, description = "Prometheus text format 0.0.4", body = String,
        content_type = "text/plain; version=0.0.4; charset=utf-8"),
))]
pub(crate) async fn metrics(ops: web::Data<Ops>) -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(ops.metrics.render())
}

/// The method as a metric label: a fixed set, so that made-up methods cannot create series.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// Middleware: a request whose handler has not answered within `limit` fails with
/// [`DeadlineExceeded`]; the handler's future is dropped.
pub(crate) async fn enforce_deadline<B: MessageBody + 'static>(
    limit: Duration,
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let path = req.path().to_owned();
    match tokio::time::timeout(limit, next.call(req)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(%path, limit = %humantime::format_duration(limit), "request deadline exceeded");
            Err(DeadlineExceeded(limit).into())
        }
    }
}

/// A handler did not answer within the request deadline: `503` with `Retry-After`.
#[derive(Debug, thiserror::Error)]
#[error("the server did not finish the request within {}", humantime::format_duration(*.0))]
pub struct DeadlineExceeded(Duration);

impl actix_web::ResponseError for DeadlineExceeded {
    fn status_code(&self) -> actix_web::http::StatusCode {
        actix_web::http::StatusCode::SERVICE_UNAVAILABLE
    }

    fn error_response(&self) -> HttpResponse {
        crate::problem::Problem::new(
            self.status_code(),
            "deadline-exceeded",
            "Request deadline exceeded",
            format!(
                "{self}; it may or may not have taken effect: retry it (with the same Idempotency-Key where \
                 the API takes one)"
            ),
        )
        .response(|_| {})
    }
}

/// Middleware: counts and times each request by method, route pattern and status.
pub(crate) async fn record_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    use tracing::Instrument as _;
    let started = std::time::Instant::now();
    let method = method_label(req.method());
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_string());
    let span =
        tracing::info_span!("http request", otel.kind = "server", http.method = %method, http.route = %route);
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    crate::telemetry::set_parent_from(&span, header("traceparent"), header("tracestate"));
    let response = next.call(req).instrument(span).await;
    let status = match &response {
        Ok(response) => response.status(),
        Err(error) => error.as_response_error().status_code(),
    };
    let status = status.as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, time::Duration};

    use actix_web::web;
    use clap::Parser;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use crate::{Runtime, config::RuntimeArgs};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        runtime: RuntimeArgs,
    }

    fn runtime(args: &[&str]) -> Runtime {
        let cli =
            Cli::try_parse_from(std::iter::once("svc").chain(args.iter().copied())).expect("valid args");
        Runtime::new("http-test", &cli.runtime)
    }

    /// Sends one raw HTTP/1.1 request and returns the whole response as text.
    async fn send(addr: SocketAddr, method: &str, path: &str) -> String {
        request(addr, method, path, None).await
    }

    /// The same, with a bearer token when given.
    async fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: test\r\n{authorization}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read");
        String::from_utf8_lossy(&response).into_owned()
    }

    async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> String {
        request(addr, "GET", path, token).await
    }

    fn with_admin_token() -> (Runtime, orders_testkit::SecretFile) {
        let file = orders_testkit::SecretFile::new("s3cret-admin\n");
        let rt = runtime(&["--admin-token-file", file.path()]);
        (rt, file)
    }

    fn failing_probe(rt: &mut Runtime) {
        rt.add_probe(crate::Probe::new("database", || async { Err("down for the test".to_string()) }));
    }

    #[actix_web::test]
    async fn the_admin_port_asks_for_its_token_but_of_the_probes() {
        let (mut rt, _token_file) = with_admin_token();
        failing_probe(&mut rt);
        let addr = rt
            .serve_admin("127.0.0.1:0".parse().expect("addr"), 1, |cfg| {
                cfg.route("/inventory", web::get().to(|| async { "stock" }));
            })
            .expect("serve");
        for path in ["/metrics", "/inventory"] {
            let refused = get(addr, path, None).await;
            assert!(refused.starts_with("HTTP/1.1 401"), "{path}: {refused}");
            assert!(
                refused.to_ascii_lowercase().contains("www-authenticate: bearer realm=\"admin\""),
                "{refused}"
            );
            assert!(get(addr, path, Some("wrong")).await.starts_with("HTTP/1.1 401"), "{path}");
            assert!(get(addr, path, Some("s3cret-admin")).await.starts_with("HTTP/1.1 200"), "{path}");
        }
        assert!(get(addr, "/healthz", None).await.starts_with("HTTP/1.1 200"));
        // Readiness answers the probes, its details only the token's holders.
        let anonymous = get(addr, "/readyz", None).await;
        assert!(
            anonymous.starts_with("HTTP/1.1 503") && !anonymous.contains("down for the test"),
            "{anonymous}"
        );
        let admin = get(addr, "/readyz", Some("s3cret-admin")).await;
        assert!(admin.contains("down for the test"), "{admin}");
    }

    #[actix_web::test]
    async fn a_public_apis_own_port_serves_no_operations_and_no_details() {
        let mut rt = runtime(&[]);
        failing_probe(&mut rt);
        let addr = rt
            .serve_api("127.0.0.1:0".parse().expect("addr"), 1, |cfg| {
                cfg.route("/api", web::get().to(|| async { "api" }));
            })
            .expect("serve");
        assert!(get(addr, "/api", None).await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/metrics", None).await.starts_with("HTTP/1.1 404"));
        let ready = get(addr, "/readyz", None).await;
        assert!(ready.starts_with("HTTP/1.1 503") && !ready.contains("down for the test"), "{ready}");
    }

    #[actix_web::test]
    async fn on_one_port_the_token_guards_the_metrics_not_the_api() {
        let (mut rt, _token_file) = with_admin_token();
        let addr = rt
            .serve_http("127.0.0.1:0".parse().expect("addr"), 1, |cfg| {
                cfg.route("/api", web::get().to(|| async { "api" }));
            })
            .expect("serve");
        assert!(get(addr, "/api", None).await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/metrics", None).await.starts_with("HTTP/1.1 401"));
        // The router decodes the path: an encoded one is the same endpoint, as guarded.
        let encoded = get(addr, "/%6Detrics", None).await;
        assert!(encoded.starts_with("HTTP/1.1 401"), "{encoded}");
        assert!(get(addr, "/metrics", Some("s3cret-admin")).await.starts_with("HTTP/1.1 200"));
    }

    #[actix_web::test]
    async fn made_up_methods_share_one_label() {
        let mut rt = runtime(&[]);
        let addr = rt
            .serve_http("127.0.0.1:0".parse().expect("addr"), 1, |cfg| {
                cfg.route("/labels-probe", web::route().to(|| async { "ok" }));
            })
            .expect("serve");
        for i in 0..20 {
            let response = send(addr, &format!("MADEUP{i}"), "/labels-probe").await;
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        }
        send(addr, "GET", "/labels-probe").await;
        let rendered = crate::metrics::handle().render();
        let series: Vec<&str> = rendered
            .lines()
            .filter(|l| l.starts_with("http_requests_total{") && l.contains("route=\"/labels-probe\""))
            .collect();
        assert_eq!(series.len(), 2, "one series for GET and one for all other methods: {series:#?}");
        assert!(series.iter().any(|l| l.contains("method=\"OTHER\"")), "{series:#?}");
        assert!(!rendered.contains("MADEUP"), "a client-chosen method became a label");
    }

    #[actix_web::test]
    async fn a_handler_past_the_request_deadline_answers_503_problem() {
        let mut rt = runtime(&["--http-request-timeout", "300ms"]);
        let addr = rt
            .serve_http("127.0.0.1:0".parse().expect("addr"), 1, |cfg| {
                cfg.route(
                    "/slow",
                    web::get().to(|| async {
                        tokio::time::sleep(Duration::from_secs(20)).await;
                        "late"
                    }),
                );
            })
            .expect("serve");
        let started = std::time::Instant::now();
        let response = send(addr, "GET", "/slow").await;
        assert!(started.elapsed() < Duration::from_secs(15), "answered after {:?}", started.elapsed());
        assert!(response.starts_with("HTTP/1.1 503"), "{response}");
        let lower = response.to_ascii_lowercase();
        assert!(lower.contains("content-type: application/problem+json"), "{response}");
        assert!(lower.contains("retry-after: 1"), "{response}");
        assert!(response.contains("/problems/deadline-exceeded"), "{response}");
        // Fast handlers are untouched.
        assert!(send(addr, "GET", "/healthz").await.starts_with("HTTP/1.1 200"));
    }
}
