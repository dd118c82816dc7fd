//! [`Runtime`]: one service's start and stop.
//!
//! Shutdown, in order, when SIGTERM or SIGINT arrives, when a background task ends or
//! fails, or when the service cancels the token itself:
//!
//! 1. `/readyz` answers 503 so that no new work is routed here;
//! 2. the HTTP servers stop accepting and finish the requests in flight;
//! 3. the shared [`CancellationToken`] is cancelled: every background loop `select!`s on
//!    it, finishes or hands back its in-flight work and returns;
//! 4. all of this must end within the shutdown deadline, or the process gives up.
//!
//! A second signal during the drain exits at once with status 130.
//!
//! The exit status says what happened: 0 for a clean stop after a signal, 1 when a task
//! failed or the drain overran its deadline.

use std::{
    future::Future,
    net::SocketAddr,
    process::ExitCode,
    sync::{Arc, RwLock},
    time::Duration,
};

use actix_web::{App, HttpServer, dev::ServerHandle, web};
use tokio::{sync::watch, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::{
    Error, Probe, Result,
    config::{RuntimeArgs, Secret},
    http::{Exposure, Ops},
};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped on request, everything drained in time.
    Clean,
    /// A task failed or ended early, or the drain overran its deadline.
    Failed,
}

impl From<Outcome> for ExitCode {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Clean => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::FAILURE,
        }
    }
}

type TaskResult = (String, anyhow::Result<()>);

/// Collects a service's HTTP servers, background tasks and readiness probes, runs them
/// and stops them in order. See the [module docs](self).
#[derive(Debug)]
pub struct Runtime {
    service: &'static str,
    shutdown: CancellationToken,
    draining: CancellationToken,
    shutdown_timeout: Duration,
    request_timeout: Duration,
    client_timeout: Duration,
    keep_alive: Duration,
    admin_token: Option<Secret>,
    probes: Arc<RwLock<Vec<Probe>>>,
    servers: Vec<ServerHandle>,
    tasks: JoinSet<TaskResult>,
    http_tasks: JoinSet<TaskResult>,
}

impl Runtime {
    /// A runtime for `service` (the name in logs, metrics and `/healthz`).
    pub fn new(service: &'static str, args: &RuntimeArgs) -> Self {
        Self {
            service,
            shutdown: CancellationToken::new(),
            draining: CancellationToken::new(),
            shutdown_timeout: args.shutdown_timeout,
            request_timeout: args.http_request_timeout,
            client_timeout: args.http_client_timeout,
            keep_alive: args.http_keep_alive,
            admin_token: args.admin_token.clone(),
            probes: Arc::default(),
            servers: Vec::new(),
            tasks: JoinSet::new(),
            http_tasks: JoinSet::new(),
        }
    }

    /// The token cancelled when shutdown reaches background work. Cancelling it from
    /// the service starts a shutdown too.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Adds a readiness probe, run by every `GET /readyz`.
    pub fn add_probe(&mut self, probe: Probe) {
        match self.probes.write() {
            Ok(mut probes) => probes.push(probe),
            Err(poisoned) => poisoned.into_inner().push(probe),
        }
    }

    /// Starts an HTTP server on `addr` with `workers` threads, serving the operational
    /// endpoints plus the routes `routes` registers: a service with one port (a public
    /// API on a developer's machine). With an admin token (`ADMIN_TOKEN_FILE`), `/metrics`
    /// and the details of `/readyz` ask for it. Returns the bound address (useful with
    /// port 0).
    pub fn serve_http<F>(&mut self, addr: SocketAddr, workers: usize, routes: F) -> Result<SocketAddr>
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        self.serve(addr, workers, routes, Exposure::Both)
    }

    /// A public API's own server: the routes `routes` registers, with `/healthz` and a
    /// `/readyz` that says only ready or not; the operational endpoints are on the admin
    /// server ([`Runtime::serve_admin`]).
    pub fn serve_api<F>(&mut self, addr: SocketAddr, workers: usize, routes: F) -> Result<SocketAddr>
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        self.serve(addr, workers, routes, Exposure::Api)
    }

    /// A public API's servers: on `addr` alone ([`Runtime::serve_http`]) when `admin`
    /// is `None`, else its own server on `addr` ([`Runtime::serve_api`]) and the
    /// operational endpoints on `admin` ([`Runtime::serve_admin`]). Returns the API's
    /// bound address.
    pub fn serve_public<F>(
        &mut self,
        addr: SocketAddr,
        admin: Option<SocketAddr>,
        workers: usize,
        routes: F,
    ) -> Result<SocketAddr>
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        match admin {
            None => self.serve_http(addr, workers, routes),
            Some(admin) => {
                self.serve_admin(admin, 1, |_| {})?;
                self.serve_api(addr, workers, routes)
            }
        }
    }

    /// The admin server: the operational endpoints plus the routes `routes` registers
    /// (an admin API: the processor's inventory). With an admin token
    /// (`ADMIN_TOKEN_FILE`), every request but `/healthz` and `/readyz` asks for it, and
    /// `/readyz` keeps its details for those that give it.
    pub fn serve_admin<F>(&mut self, addr: SocketAddr, workers: usize, routes: F) -> Result<SocketAddr>
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        self.serve(addr, workers, routes, Exposure::Admin)
    }

    fn serve<F>(
        &mut self,
        addr: SocketAddr,
        workers: usize,
        routes: F,
        exposure: Exposure,
    ) -> Result<SocketAddr>
    where
        F: Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
    {
        let metrics = crate::metrics::handle();
        // Not ready until a `/readyz` says so (even where nothing asks, as under Compose).
        ::metrics::gauge!(crate::http::READY).set(0.0);
        let ops = web::Data::new(Ops {
            service: self.service,
            probes: Arc::clone(&self.probes),
            metrics,
            draining: self.draining.clone(),
            probe_deadline: Duration::from_secs(4),
            exposure,
            admin_token: self.admin_token.clone(),
        });
        let request_timeout = self.request_timeout;
        let server = HttpServer::new(move || {
            let guard = ops.clone();
            App::new()
                .wrap(actix_web::middleware::from_fn(move |req, next| {
                    crate::http::guard_admin(guard.clone(), req, next)
                }))
                .wrap(actix_web::middleware::from_fn(move |req, next| {
                    crate::http::enforce_deadline(request_timeout, req, next)
                }))
                .wrap(actix_web::middleware::from_fn(crate::http::record_request))
                .app_data(ops.clone())
                .configure(move |cfg| crate::http::ops_routes(cfg, exposure))
                .configure(routes.clone())
        })
        .workers(workers.max(1))
        .client_request_timeout(self.client_timeout)
        .keep_alive(self.keep_alive)
        .disable_signals()
        .shutdown_timeout(self.shutdown_timeout.as_secs().max(1))
        .bind(addr)
        .map_err(|source| Error::Bind { addr, source })?;
        let bound = server.addrs().first().copied().unwrap_or(addr);
        let server = server.run();
        self.servers.push(server.handle());
        let name = format!("http {bound}");
        self.http_tasks.spawn(async move { (name, server.await.map_err(anyhow::Error::from)) });
        info!(service = self.service, addr = %bound, serves = exposure.describe(), "HTTP server listening");
        Ok(bound)
    }

    /// Applies the service's migrations in the background, retrying with exponential
    /// backoff and jitter (200 ms up to 10 s) until they succeed, so that a service
    /// whose database is down at start still starts, answers `/healthz`, and applies
    /// them once the database is back. The readiness probe `probe` fails until then;
    /// the returned receiver turns `true` then, for the tasks that must not start
    /// before ([`migrations_applied`]). The receiver is closed without turning `true`
    /// only once shutdown has begun: a waiting task then returns.
    pub fn migrate_in_background<F, Fut, E>(
        &mut self,
        probe: &'static str,
        migrate: F,
    ) -> watch::Receiver<bool>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        use backon::Retryable as _;

        let (applied, migrated) = watch::channel(false);
        self.add_probe(Probe::new(probe, {
            let migrated = migrated.clone();
            move || {
                let done = *migrated.borrow();
                async move { if done { Ok(()) } else { Err("migrations not applied yet".to_string()) } }
            }
        }));
        let token = self.shutdown.clone();
        tokio::spawn(async move {
            let backoff = backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(10))
                .with_jitter()
                .without_max_times();
            let attempts = migrate
                .retry(backoff)
                .notify(|e: &E, delay| warn!(error = format!("{e:#}"), retry_in = ?delay, "migrations failed; retrying"));
            tokio::select! {
                outcome = attempts => if outcome.is_ok() { applied.send_replace(true); },
                () = token.cancelled() => {}
            }
        });
        migrated
    }

    /// Spawns a named background task. It receives the shutdown token and must return
    /// soon after it is cancelled. A task that returns before shutdown, or fails, stops
    /// the whole service (and the process exits with status 1).
    pub fn spawn<F, Fut>(&mut self, name: impl Into<String>, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let name = name.into();
        let fut = task(self.shutdown.clone());
        self.tasks.spawn(async move { (name, fut.await) });
    }

    /// Runs until SIGTERM or SIGINT (or a failed task), then shuts down in order.
    pub async fn run(self) -> Outcome {
        self.run_until(terminate_signal()).await
    }

    /// Runs until `stop` completes (or a task fails), then shuts down in order.
    pub async fn run_until(mut self, stop: impl Future<Output = ()>) -> Outcome {
        let service = self.service;
        let mut failed = false;
        let upkeep = self.spawn_metrics_upkeep();
        // A task that ends because the service cancelled the token can be seen before
        // the token itself: `early` asks the token, not the order of the branches.
        let early = |shutdown: &CancellationToken| !shutdown.is_cancelled();
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => info!(service, "shutdown requested by the service"),
            () = stop => info!(service, "shutdown requested"),
            Some(joined) = self.tasks.join_next() => failed |= report(joined, early(&self.shutdown)),
            Some(joined) = self.http_tasks.join_next() => failed |= report(joined, early(&self.shutdown)),
        }

        self.draining.cancel();
        let Self { servers, mut tasks, mut http_tasks, shutdown, shutdown_timeout, .. } = self;
        let drain = async {
            let mut failed = false;
            for server in &servers {
                server.stop(true).await;
            }
            while let Some(joined) = http_tasks.join_next().await {
                failed |= report(joined, false);
            }
            shutdown.cancel();
            while let Some(joined) = tasks.join_next().await {
                failed |= report(joined, false);
            }
            failed
        };
        let outcome = match tokio::time::timeout(shutdown_timeout, drain).await {
            Ok(drain_failed) => {
                if failed || drain_failed {
                    Outcome::Failed
                } else {
                    Outcome::Clean
                }
            }
            Err(_) => {
                error!(service, timeout = ?shutdown_timeout, "shutdown did not finish in time; giving up");
                Outcome::Failed
            }
        };
        upkeep.abort();
        info!(service, ?outcome, "stopped");
        outcome
    }

    fn spawn_metrics_upkeep(&self) -> tokio::task::JoinHandle<()> {
        let handle = crate::metrics::handle();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        })
    }
}

/// Waits, in a task that must not start before the migrations, until the receiver of
/// [`Runtime::migrate_in_background`] says they are applied: `true` then, `false` when
/// shutdown comes first (the task should return). The migration task ends without
/// applying only once shutdown has begun, so a closed channel means the same; `biased`
/// looks at the token first.
pub async fn migrations_applied(migrated: &mut watch::Receiver<bool>, token: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        () = token.cancelled() => false,
        applied = migrated.wait_for(|done| *done) => applied.is_ok(),
    }
}

/// Logs how a task ended; returns whether that counts as a failure.
fn report(joined: std::result::Result<TaskResult, tokio::task::JoinError>, before_shutdown: bool) -> bool {
    match joined {
        Ok((name, Ok(()))) if before_shutdown => {
            error!(task = %name, "task ended before shutdown was requested");
            true
        }
        Ok((_, Ok(()))) => false,
        Ok((name, Err(e))) => {
            error!(task = %name, error = format!("{e:#}"), "task failed");
            true
        }
        Err(e) => {
            error!(error = %e, "task panicked or was aborted");
            true
        }
    }
}

/// Completes on the first SIGTERM or SIGINT. A second one exits the process at once
/// with status 130.
pub async fn terminate_signal() {
    first_signal().await;
    tokio::spawn(async {
        first_signal().await;
        warn!("second signal: exiting without finishing the shutdown");
        std::process::exit(130);
    });
}

async fn first_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot listen for SIGTERM; only SIGINT will stop the service");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(timeout: &str) -> Runtime {
        Runtime::new("test", &crate::config::test_args(&["--shutdown-timeout", timeout]))
    }

    #[tokio::test]
    async fn a_stop_request_cancels_tasks_and_ends_clean() {
        let mut rt = runtime("5s");
        let (tx, rx) = tokio::sync::oneshot::channel();
        rt.spawn("loop", |token| async move {
            token.cancelled().await;
            let _ = tx.send("drained");
            Ok(())
        });
        let outcome = rt.run_until(async {}).await;
        assert_eq!(outcome, Outcome::Clean);
        assert_eq!(rx.await.ok(), Some("drained"));
    }

    #[tokio::test]
    async fn a_failing_task_stops_the_service_with_failure() {
        let mut rt = runtime("5s");
        rt.spawn("broken", |_| async { anyhow::bail!("boom") });
        let outcome = rt.run_until(std::future::pending()).await;
        assert_eq!(outcome, Outcome::Failed);
    }

    #[tokio::test]
    async fn a_task_that_ends_early_is_a_failure() {
        let mut rt = runtime("5s");
        rt.spawn("quitter", |_| async { Ok(()) });
        let outcome = rt.run_until(std::future::pending()).await;
        assert_eq!(outcome, Outcome::Failed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_past_the_deadline_is_a_failure() {
        let mut rt = runtime("2s");
        rt.spawn("stubborn", |_| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        let outcome = rt.run_until(async {}).await;
        assert_eq!(outcome, Outcome::Failed);
    }

    #[tokio::test(start_paused = true)]
    async fn migrations_are_retried_until_they_apply_and_readiness_waits_for_them() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let mut rt = runtime("5s");
        let attempts = Arc::new(AtomicU32::new(0));
        let mut migrated =
            rt.migrate_in_background("schema", {
                let attempts = Arc::clone(&attempts);
                move || {
                    let attempt = attempts.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if attempt < 3 { Err(format!("database down (attempt {attempt})")) } else { Ok(()) }
                    }
                }
            });
        let schema_ok = |rt: &Runtime| {
            let probes = rt.probes.read().map(|p| p.clone()).unwrap_or_default();
            async move { crate::probe::check_all(&probes, Duration::from_secs(1)).await.iter().all(|c| c.ok) }
        };
        assert!(!schema_ok(&rt).await, "not ready before the migrations apply");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !schema_ok(&rt).await {
            assert!(tokio::time::Instant::now() < deadline, "migrations never applied");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            4,
            "three failures, then one success, then no more attempts"
        );
        migrated.wait_for(|done| *done).await.expect("the receiver sees the migrations applied");
    }

    #[tokio::test]
    async fn the_service_can_request_its_own_shutdown() {
        let mut rt = runtime("5s");
        let token = rt.shutdown_token();
        rt.spawn("worker", |t| async move {
            t.cancelled().await;
            Ok(())
        });
        token.cancel();
        assert_eq!(rt.run_until(std::future::pending()).await, Outcome::Clean);
    }

    /// The token cancelled while the runtime runs: tasks that end on it end first,
    /// often, and that is the shutdown, not a task ending early.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tasks_ending_on_a_cancelled_token_are_a_clean_stop() {
        for round in 0..200 {
            let mut rt = runtime("5s");
            let token = rt.shutdown_token();
            for _ in 0..4 {
                rt.spawn("worker", |t| async move {
                    t.cancelled().await;
                    Ok(())
                });
            }
            let running = tokio::spawn(rt.run_until(std::future::pending()));
            tokio::task::yield_now().await;
            token.cancel();
            assert_eq!(running.await.ok(), Some(Outcome::Clean), "round {round}");
        }
    }
}
