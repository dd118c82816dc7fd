//! The start and stop of a service, the same for every binary of the platform.
//!
//! A service's `main.rs` reads as wiring over this crate:
//!
//! 1. parse its configuration, a `clap` struct that flattens [`config::RuntimeArgs`]
//!    (log filter and format, trace export, shutdown deadline), with every setting
//!    also read from an environment variable and listed by `--help`;
//! 2. [`telemetry::init`] installs `tracing` (JSON logs, or human-readable ones on a
//!    terminal; OTLP trace export when an endpoint is configured) and returns a guard
//!    that flushes on drop;
//! 3. a [`Runtime`] collects readiness [`Probe`]s, the HTTP server (with `/healthz`,
//!    `/readyz` and `/metrics` added to the service's own routes) and named background
//!    tasks, then [`Runtime::run`] waits for SIGTERM/SIGINT or a failed task, stops HTTP,
//!    cancels the shared [`CancellationToken`], drains with a deadline and returns the
//!    process exit code.
//!
//! Layout:
//! - [`config`]: configuration pieces shared by services (`clap` arguments with `env`).
//! - [`auth`]: who is calling: Bearer JWTs checked against a key set, or explicitly none.
//! - [`telemetry`]: logging and tracing set-up.
//! - [`metrics`]: the process-wide Prometheus recorder.
//! - [`probe`]: readiness checks (PostgreSQL, Kafka, or any async check).
//! - [`progress`]: the progress of operations run by hand: a bar on a terminal, log lines otherwise.
//! - [`http`]: the operational endpoints and the HTTP server.
//! - [`problem`]: RFC 9457 `application/problem+json` error bodies.
//! - [`limits`]: what one request or client may ask: JSON depth, a per-client rate.
//! - [`lifecycle`]: [`Runtime`], signals and graceful shutdown.
//! - [`postgres`] and [`kafka`]: building a connection pool (with server-side session
//!   limits, from [`orders_postgres`]) and client configuration from the shared arguments.
//!
//! This crate knows nothing of orders: any Rust service on actix-web, PostgreSQL and
//! Kafka can use it.

pub mod auth;
pub mod config;
pub mod http;
pub mod kafka;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod postgres;
pub mod probe;
pub mod problem;
pub mod progress;
pub mod telemetry;

pub use lifecycle::Runtime;
pub use probe::Probe;
pub use tokio_util::sync::CancellationToken;

/// What can go wrong while setting a service up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is present but unusable.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Telemetry could not be installed (for example a bad OTLP endpoint).
    #[error("telemetry set-up failed: {0}")]
    Telemetry(String),
    /// The HTTP server could not bind its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A Kafka client could not be created from its configuration.
    #[error("kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A PostgreSQL pool or connection could not be set up.
    #[error(transparent)]
    Postgres(#[from] orders_postgres::Error),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Configuration of one service binary, as its `main` hands it to [`serve`].
pub trait ServiceConfig: clap::Parser {
    /// The service's name, in logs, metrics and `/healthz`.
    const NAME: &'static str;

    /// The settings every service shares.
    fn runtime(&self) -> &config::RuntimeArgs;
}

/// Implements [`ServiceConfig`] for a service's configuration struct, which must have
/// a `runtime: RuntimeArgs` field: `orders_runtime::service_config!(Config, "my-service");`.
#[macro_export]
macro_rules! service_config {
    ($config:ty, $name:expr) => {
        impl $crate::ServiceConfig for $config {
            const NAME: &'static str = $name;

            fn runtime(&self) -> &$crate::config::RuntimeArgs {
                &self.runtime
            }
        }
    };
}

/// The whole life of a service binary: telemetry, `build` (which registers probes,
/// the HTTP server and background tasks on the [`Runtime`]), then run until a signal
/// and shut down in order. Returns the process exit code: 0 after a clean stop, 1 when
/// building failed, a task failed or the drain overran its deadline.
pub async fn serve<C, T>(
    config: C,
    build: impl AsyncFnOnce(C, &mut Runtime) -> anyhow::Result<T>,
) -> std::process::ExitCode
where
    C: ServiceConfig,
{
    let _telemetry = match telemetry::init(C::NAME, config.runtime()) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("{}: {e}", C::NAME);
            return std::process::ExitCode::from(2);
        }
    };
    let mut runtime = Runtime::new(C::NAME, config.runtime());
    tracing::info!(service = C::NAME, "starting");
    if let Err(e) = build(config, &mut runtime).await {
        tracing::error!(service = C::NAME, error = format!("{e:#}"), "start-up failed");
        return std::process::ExitCode::FAILURE;
    }
    runtime.run().await.into()
}
