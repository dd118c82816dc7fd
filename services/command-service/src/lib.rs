//! command-service: the write side. An event-sourced `Order` aggregate
//! (`orders_domain`), an event store in PostgreSQL with optimistic concurrency and a
//! transactional outbox (`orders_eventstore`), behind an HTTP command API; it also
//! applies the commands other services send on `order-commands`.
//!
//! Layout:
//! - [`app`]: runs one command against one order (load, rules, append with outbox,
//!   snapshot and idempotency record, bounded retries on lost races);
//! - [`http`]: the HTTP API and its idempotency-key handling;
//! - [`problem`]: errors as `application/problem+json`;
//! - [`consumer`]: the `order-commands` consumer.
//!
//! At start the schema migrations are applied (retrying while the database is down;
//! `/readyz` reports `schema` until they are); `command-service migrate` applies them
//! and exits, for a Kubernetes Job.

pub mod app;
pub mod consumer;
pub mod http;
pub mod problem;

use std::{net::SocketAddr, time::Duration};

use actix_web::web;
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use orders_eventstore::{EventStore, GroupCommit, Options};
use orders_runtime::{
    CancellationToken, Probe, Runtime,
    auth::{AuthArgs, Authenticator},
    config::{RuntimeArgs, parse_duration},
    kafka::KafkaArgs,
    limits::RateLimiter,
    postgres::{self, DatabaseUrl},
};

/// The service's name in logs, metrics and health answers.
pub const SERVICE: &str = "command-service";

/// Configuration, from flags or environment variables (`--help` lists them all).
#[derive(Debug, Clone, Parser)]
#[command(name = SERVICE, version, about = "Order command API: event store and transactional outbox")]
pub struct Config {
    /// What to do; without a subcommand, serve.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address of the HTTP server: the command API, plus /healthz, /readyz and /metrics
    /// unless ADMIN_ADDR is set.
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Address of an admin server apart from the API: /metrics and /readyz with its
    /// details there, only /healthz and /readyz's status on HTTP_ADDR. Unset: all on
    /// HTTP_ADDR.
    #[arg(long, env = "ADMIN_ADDR")]
    pub admin_addr: Option<SocketAddr>,

    /// Number of HTTP worker threads.
    #[arg(long, env = "HTTP_WORKERS", default_value_t = 2)]
    pub http_workers: usize,

    /// Largest accepted request body, in bytes (larger ones get 413).
    #[arg(long, env = "BODY_LIMIT", default_value_t = 64 * 1024)]
    pub body_limit: usize,

    /// Commands per second one client may send (told apart by its token's subject, or
    /// by its address without authentication); over it, `429` with `Retry-After`. 0: no
    /// limit.
    #[arg(long, env = "COMMAND_RATE_LIMIT", default_value_t = 0)]
    pub command_rate_limit: u32,

    /// Commands one client may send at once above its rate.
    #[arg(long, env = "COMMAND_RATE_BURST", default_value_t = 50)]
    pub command_rate_burst: u32,

    /// PostgreSQL database of the event store, snapshots, outbox and idempotency keys.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:15432/orders_write", value_parser = postgres::DatabaseUrlParser, hide_env_values = true)]
    pub database_url: DatabaseUrl,

    /// Maximum number of PostgreSQL connections.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,

    /// Server-side limits of every PostgreSQL session.
    #[command(flatten)]
    pub database_session: postgres::SessionArgs,

    /// Channel to NOTIFY in every commit so the outbox relay wakes at once; empty: none.
    #[arg(long, env = "NOTIFY_CHANNEL", default_value = "outbox")]
    pub notify_channel: String,

    /// Transactions the event store runs at once to commit concurrent commands
    /// together (group commit); 0: one transaction per command.
    #[arg(long, env = "GROUP_COMMIT_WORKERS", default_value_t = 4)]
    pub group_commit_workers: usize,

    /// Most commands committed in one shared transaction.
    #[arg(long, env = "GROUP_COMMIT_MAX_BATCH", default_value_t = 64)]
    pub group_commit_max_batch: usize,

    /// Most commands waiting for a group-commit transaction; one more is answered 503
    /// at once (load shedding) instead of waiting in an ever longer line.
    #[arg(long, env = "GROUP_COMMIT_MAX_QUEUED", default_value_t = 1024)]
    pub group_commit_max_queued: usize,

    /// The most one command's write may take (queueing, connecting and committing);
    /// past it the command is answered 503 with `Retry-After`.
    #[arg(long, env = "APPEND_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub append_timeout: Duration,

    /// Write a snapshot of an order every this many events (0: never).
    #[arg(long, env = "SNAPSHOT_EVERY", default_value_t = 20)]
    pub snapshot_every: u64,

    /// How many times a command is re-run after losing a race with another writer.
    #[arg(long, env = "MAX_RETRIES", default_value_t = 5)]
    pub max_retries: u32,

    /// How long idempotency keys are remembered.
    #[arg(long, env = "IDEMPOTENCY_TTL", default_value = "24h", value_parser = parse_duration)]
    pub idempotency_ttl: Duration,

    /// Topic the outbox rows are addressed to (published by outbox-relay).
    #[arg(long, env = "ORDERS_TOPIC", default_value = "orders")]
    pub orders_topic: String,

    /// Topic of the commands other services send (ship, cancel).
    #[arg(long, env = "ORDER_COMMANDS_TOPIC", default_value = "order-commands")]
    pub commands_topic: String,

    /// Dead-letter topic for commands that cannot be decoded.
    #[arg(long, env = "DEAD_LETTER_TOPIC", default_value = "dlq.order-commands")]
    pub dead_letter_topic: String,

    /// Consumer group of the order-commands consumer.
    #[arg(long, env = "CONSUMER_GROUP", default_value = "command-service")]
    pub consumer_group: String,

    /// At most this many commands from order-commands applied at once (different
    /// orders; one order's commands always one after the other, in order).
    #[arg(long, env = "CONSUMER_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub consumer_concurrency: u16,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Who may call the API (Bearer JWTs, or explicitly none).
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
}

orders_runtime::service_config!(Config, SERVICE);

/// Registers the service's probes, HTTP server and tasks on `rt`; returns the address
/// the HTTP server is bound to.
pub async fn build(config: Config, rt: &mut Runtime) -> anyhow::Result<SocketAddr> {
    let pool = config.database_session.pool(&config.database_url, config.database_pool_size, SERVICE)?;
    let notify_channel = Some(config.notify_channel.clone()).filter(|c| !c.is_empty());
    let group_commit = (config.group_commit_workers > 0).then_some(GroupCommit {
        committers: config.group_commit_workers,
        max_batch: config.group_commit_max_batch,
        max_queued: config.group_commit_max_queued,
    });
    let store = EventStore::new(
        pool.clone(),
        Options { notify_channel, group_commit, append_timeout: config.append_timeout },
    );

    if matches!(config.command, Some(Command::Migrate)) {
        store.migrate().await.context("applying migrations")?;
        tracing::info!("migrations applied");
        rt.shutdown_token().cancel();
        return Ok(config.http_addr);
    }

    rt.add_probe(Probe::postgres("postgres", pool));
    rt.migrate_in_background("schema", {
        let store = store.clone();
        move || {
            let store = store.clone();
            async move { store.migrate().await }
        }
    });
    rt.add_probe(Probe::kafka(
        "kafka",
        &config.kafka.client_config(),
        vec![config.orders_topic.clone(), config.commands_topic.clone(), config.dead_letter_topic.clone()],
    )?);

    let commands = app::Commands::new(
        store.clone(),
        app::Settings {
            orders_topic: config.orders_topic.clone(),
            snapshot_every: config.snapshot_every,
            max_retries: config.max_retries,
            idempotency_ttl: config.idempotency_ttl,
        },
    );
    let consumer = consumer::CommandConsumer::new(
        commands.clone(),
        &config.kafka,
        consumer::Topics {
            commands: config.commands_topic.clone(),
            dead_letter: config.dead_letter_topic.clone(),
            group: config.consumer_group.clone(),
        },
        usize::from(config.consumer_concurrency),
    )?;
    rt.spawn("order-commands consumer", |token| consumer.run(token));
    rt.spawn("idempotency purge", |token| purge_expired(store, token));

    let authenticator = Authenticator::new(&config.auth).await?;
    rt.spawn("auth keys", {
        let authenticator = authenticator.clone();
        move |token| authenticator.refresh_periodically(token)
    });
    let state = web::Data::new(http::HttpState {
        commands,
        body_limit: config.body_limit,
        limiter: RateLimiter::per_second(config.command_rate_limit, config.command_rate_burst),
    });
    let addr = rt.serve_public(
        config.http_addr,
        config.admin_addr,
        config.http_workers,
        http::routes(state, web::Data::from(authenticator)),
    )?;
    Ok(addr)
}

async fn purge_expired(store: EventStore, token: CancellationToken) -> anyhow::Result<()> {
    let every = Duration::from_secs(600);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            () = token.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        match store.purge_expired_idempotency().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired idempotency records deleted"),
            Err(e) => tracing::warn!(error = %e, "purging idempotency records failed"),
        }
    }
}
