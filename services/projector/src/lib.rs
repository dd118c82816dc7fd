//! projector: the CQRS read side. Consumes `orders`, maintains the read model in
//! PostgreSQL (`orders_read`) with its Kafka positions in the same transactions, keeps
//! the windows of `order-stats` (the stats aggregator's output) the same way, and
//! serves the query API.
//!
//! Layout:
//! - [`model`]: the projection's rules, pure: versions (duplicates skipped, events
//!   after a gap parked until it closes), order views, per-user statistics;
//! - [`project`]: the `orders_projection::Handler` that decodes a partition batch and
//!   writes it with a few set-based statements, parked events included;
//! - [`parked`]: events after a version gap, waiting for it to close; [`gaps`]: their
//!   gauges;
//! - [`schema`]: the read model's schema, migrations and connection pools;
//! - [`rebuild`]: `projector rebuild`, a fresh read model swapped in atomically;
//! - [`query`], [`http`], [`problem`]: the query API and its errors;
//! - [`waiters`]: read-your-writes (`?min_version=`) waiters, woken per order;
//! - [`windows`]: the handler of the second projection, `order-stats` into the windows
//!   read model (a schema of its own, which a rebuild leaves alone).
//!
//! The consume loop itself (batching, positions stored with the batch and sought to on
//! assignment, dead letters, lag and latency metrics) is the generic
//! `orders-projection` crate.
//!
//! At start the schema migrations are applied (retrying while the database is down;
//! `/readyz` reports `schema` until they are) and the projection starts once they are;
//! `projector migrate` applies them and exits, for a Kubernetes Job; `projector rebuild`
//! rebuilds the read model and exits.

pub mod gaps;
pub mod http;
pub mod model;
pub mod parked;
pub mod problem;
pub mod project;
pub mod query;
pub mod rebuild;
pub mod schema;
pub mod waiters;
pub mod windows;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use actix_web::web;
use anyhow::Context as _;
use backon::{BackoffBuilder as _, ExponentialBuilder};
use clap::{Parser, Subcommand};
use orders_projection::{Projection, Settings};
use orders_runtime::{
    CancellationToken, Probe, Runtime,
    auth::{AuthArgs, Authenticator},
    config::{RuntimeArgs, parse_duration},
    kafka::KafkaArgs,
    lifecycle::migrations_applied,
    postgres::{self, DatabaseUrl},
};

use crate::{project::ReadModel, schema::PoolOptions, waiters::Waiters};

/// The service's name in logs, metrics and health answers.
pub const SERVICE: &str = "projector";
/// The projection's name: its key in `consumer_positions` and its metrics label.
pub const PROJECTION: &str = "order-views";
/// The windows projection's name.
pub const WINDOWS_PROJECTION: &str = "user-windows";

/// Configuration, from flags or environment variables (`--help` lists them all).
#[derive(Debug, Clone, Parser)]
#[command(name = SERVICE, version, about = "Read models of the orders and the query API")]
pub struct Config {
    /// What to do; without a subcommand, project and serve queries.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address of the HTTP server: the query API, plus /healthz, /readyz and /metrics
    /// unless ADMIN_ADDR is set.
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8081")]
    pub http_addr: SocketAddr,

    /// Address of an admin server apart from the API: /metrics and /readyz with its
    /// details there, only /healthz and /readyz's status on HTTP_ADDR. Unset: all on
    /// HTTP_ADDR.
    #[arg(long, env = "ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,

    /// Number of HTTP worker threads.
    #[arg(long, env = "HTTP_WORKERS", default_value_t = 2)]
    pub http_workers: usize,

    /// PostgreSQL database of the read model and consumer checkpoints.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:15432/orders_read", value_parser = postgres::DatabaseUrlParser, hide_env_values = true)]
    pub database_url: DatabaseUrl,

    /// Maximum number of PostgreSQL connections serving queries.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 8)]
    pub database_pool_size: usize,

    /// Server-side limits of every PostgreSQL session.
    #[command(flatten)]
    pub database_session: orders_runtime::postgres::SessionArgs,

    /// Maximum number of PostgreSQL connections applying batches: batches of different
    /// partitions are applied concurrently, each in its own transaction.
    #[arg(long, env = "APPLY_CONNECTIONS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub apply_connections: u16,

    /// Topic of the order events to project.
    #[arg(long, env = "ORDERS_TOPIC", default_value = "orders")]
    pub orders_topic: String,

    /// Dead-letter topic for events that cannot be decoded or applied.
    #[arg(long, env = "DEAD_LETTER_TOPIC", default_value = "dlq.orders")]
    pub dead_letter_topic: String,

    /// Consumer group of the projection.
    #[arg(long, env = "CONSUMER_GROUP", default_value = "projector")]
    pub consumer_group: String,

    /// Topic of the per-user window aggregates (read with `read_committed`); its
    /// undecodable records go to the dead-letter topic too.
    #[arg(long, env = "ORDER_STATS_TOPIC", default_value = "order-stats")]
    pub stats_topic: String,

    /// Consumer group of the windows projection (a group of its own: a rebalance of
    /// one projection does not pause the other).
    #[arg(long, env = "WINDOWS_CONSUMER_GROUP", default_value = "projector-windows")]
    pub windows_consumer_group: String,

    /// Most events applied in one transaction (one partition's batch), and polled at once.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,

    /// Longest wait for more events after the first event of a poll.
    #[arg(long, env = "BATCH_WAIT", default_value = "10ms", value_parser = parse_duration)]
    pub batch_wait: Duration,

    /// Longest wait of a query with `?min_version=` for the view to reach that version.
    #[arg(long, env = "MIN_VERSION_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub min_version_timeout: Duration,

    /// Most queries with `?min_version=` waiting at once; one more answers at once, with
    /// the staleness visible, as when the wait runs out.
    #[arg(long, env = "MIN_VERSION_MAX_WAITERS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub min_version_max_waiters: u32,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Who may call the query API (Bearer JWTs, or explicitly none).
    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Subcommands.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Command {
    /// Apply the database migrations, then exit.
    Migrate,
    /// Rebuild the read model from the start of the topic into fresh tables, swap them in
    /// when caught up (the old ones serve until then), then exit.
    Rebuild,
}

orders_runtime::service_config!(Config, SERVICE);

/// The projection's settings from the configuration.
pub fn projection_settings(config: &Config) -> Settings {
    Settings {
        name: PROJECTION.to_string(),
        topic: config.orders_topic.clone(),
        dead_letter_topic: config.dead_letter_topic.clone(),
        max_batch: config.batch_size as usize,
        max_wait: config.batch_wait,
        consumer: config.kafka.consumer_config(&config.consumer_group),
        producer: config.kafka.producer_config(),
    }
}

/// The windows projection's settings from the configuration.
pub fn windows_settings(config: &Config) -> Settings {
    Settings {
        name: WINDOWS_PROJECTION.to_string(),
        topic: config.stats_topic.clone(),
        consumer: config.kafka.consumer_config(&config.windows_consumer_group),
        ..projection_settings(config)
    }
}

/// Registers the service's probes, HTTP server and tasks on `rt`; returns the address
/// the HTTP server is bound to. `migrate` and `rebuild` do their work here and ask the
/// runtime to stop.
pub async fn build(config: Config, rt: &mut Runtime) -> anyhow::Result<SocketAddr> {
    match config.command {
        Some(Command::Migrate) => {
            schema::migrate(&config.database_url).await?;
            tracing::info!("migrations applied");
            rt.shutdown_token().cancel();
            return Ok(config.http_addr);
        }
        Some(Command::Rebuild) => {
            let token = rt.shutdown_token();
            let report = tokio::select! {
                report = rebuild::rebuild(&config, &token) => report.context("rebuilding the read model")?,
                () = orders_runtime::lifecycle::terminate_signal() => {
                    token.cancel();
                    anyhow::bail!("rebuild interrupted by a signal; the live read model is unchanged");
                }
            };
            tracing::info!(positions = ?report.positions, elapsed = ?report.elapsed, "rebuild done");
            token.cancel();
            return Ok(config.http_addr);
        }
        None => {}
    }

    // The recorder before any metric handle: the projection's meters are registered
    // once, when it starts, which may be before `serve_http` would install it.
    orders_runtime::metrics::handle();
    let session = config.database_session.session();
    let live = |application_name, asynchronous_commit| PoolOptions {
        application_name,
        schema: schema::LIVE,
        session: &session,
        asynchronous_commit,
    };
    let query_pool = schema::pool(&config.database_url, config.database_pool_size, live(SERVICE, false))?;
    let apply_pool =
        schema::pool(&config.database_url, config.apply_connections.into(), live("projector-apply", true))?;
    let windows = |application_name, size: usize, asynchronous_commit| {
        let options =
            PoolOptions { application_name, schema: windows::SCHEMA, session: &session, asynchronous_commit };
        schema::pool(&config.database_url, size, options)
    };
    let windows_query_pool = windows(SERVICE, config.database_pool_size, false)?;
    let windows_apply_pool = windows("projector-windows", config.apply_connections.into(), true)?;

    rt.add_probe(Probe::postgres("postgres", query_pool.clone()));
    let migrated = rt.migrate_in_background("schema", {
        let url = config.database_url.clone();
        move || {
            let url = url.clone();
            async move { schema::migrate(&url).await }
        }
    });
    rt.add_probe(Probe::kafka(
        "kafka",
        &config.kafka.client_config(),
        vec![config.orders_topic.clone(), config.stats_topic.clone(), config.dead_letter_topic.clone()],
    )?);

    let waiters = Waiters::new(config.min_version_max_waiters as usize);
    let settings = projection_settings(&config);
    spawn_partition_count(&settings, Arc::clone(&waiters), rt.shutdown_token());
    rt.spawn("projection", {
        let waiters = Arc::clone(&waiters);
        let mut migrated = migrated.clone();
        move |token| async move {
            if !migrations_applied(&mut migrated, &token).await {
                return Ok(());
            }
            let mut projection = Projection::subscribe(settings, apply_pool, ReadModel)
                .context("starting the orders consumer")?;
            projection.on_commit(move |committed| {
                waiters.committed(committed.batch.iter().map(|record| record.key.as_deref()));
            });
            projection.run(token).await.context("projecting orders")
        }
    });

    rt.spawn("windows-projection", {
        let (settings, mut migrated) = (windows_settings(&config), migrated);
        move |token| async move {
            if !migrations_applied(&mut migrated, &token).await {
                return Ok(());
            }
            Projection::subscribe(settings, windows_apply_pool, windows::Windows)
                .context("starting the order-stats consumer")?
                .run(token)
                .await
                .context("projecting order-stats")
        }
    });

    rt.spawn("gap-gauges", {
        let pool = query_pool.clone();
        move |token| gaps::run(pool, token)
    });

    let state = web::Data::new(http::QueryState {
        queries: query::Queries::new(query_pool, windows_query_pool),
        waiters,
        min_version_timeout: config.min_version_timeout,
    });
    let authenticator = Authenticator::new(&config.auth).await?;
    rt.spawn("auth keys", {
        let authenticator = authenticator.clone();
        move |token| authenticator.refresh_periodically(token)
    });
    let routes = http::routes(state, web::Data::from(authenticator));
    let addr = rt.serve_public(config.http_addr, config.admin_addr, config.http_workers, routes)?;
    Ok(addr)
}

/// Reads the topic's partition count in the background (retrying while Kafka is down),
/// for the `min_version` waiters.
fn spawn_partition_count(settings: &Settings, waiters: Arc<Waiters>, token: CancellationToken) {
    let (config, topic) = (settings.consumer.clone(), settings.topic.clone());
    tokio::spawn(async move {
        let mut delays = retry_delays();
        loop {
            match orders_projection::topic_partitions(&config, &topic).await {
                Ok(partitions) => return waiters.set_partitions(partitions.len()),
                Err(e) => tracing::warn!(error = %e, "reading the topic's partition count failed; retrying"),
            }
            tokio::select! {
                () = token.cancelled() => return,
                () = tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(10))) => {}
            }
        }
    });
}

/// The backoff of the service's background retries: 200 ms doubling to 10 s, with
/// jitter, forever.
fn retry_delays() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}
