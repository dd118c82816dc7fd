//! outbox-relay: publishes the outbox that command-service commits to PostgreSQL
//! (`orders_write`) to Kafka, in order per order, with an idempotent producer, clearing
//! rows only once the broker acknowledged them.
//!
//! The work is done by the generic relay of the `orders-outbox` crate (its docs explain
//! the design: shards owned through advisory locks, why no row is skipped, why one
//! order's events stay in order with any number of replicas, what happens at shutdown
//! and during outages). This crate is its configuration and wiring:
//!
//! - [`Config`]: every setting, a flag with an environment fallback (`--help`);
//! - [`build`]: the pool, the relay task, the readiness probes (`postgres`, `kafka`
//!   with the orders topic, `relay`: publishing not stalled or failing) and the admin
//!   HTTP server with `/healthz`, `/readyz` and `/metrics` (the `outbox_*` metrics);
//! - [`ops`]: the `quarantine` subcommand, for the rows the relay could never publish
//!   and set aside (`outbox_quarantined_total` counts them): `outbox-relay quarantine
//!   list`, `requeue <id>...|--all` (back into the outbox, each before the rows of its
//!   order that waited behind it), `discard <id>...|--all` (the waiting rows go on).
//!
//! The relay does not create the schema: command-service migrates `orders_write`.
//! Until the outbox table exists, reads fail, are counted in `outbox_errors_total` and
//! retried with backoff.

pub mod ops;

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use orders_outbox::{Relay, RelayOptions, SessionKeepalive};
use orders_runtime::{
    Probe, Runtime,
    config::{RuntimeArgs, parse_duration},
    kafka::KafkaArgs,
    postgres::{self, DatabaseUrl},
};

/// The service's name in logs, metrics and health answers.
pub const SERVICE: &str = "outbox-relay";

/// Configuration, from flags or environment variables (`--help` lists them all).
#[derive(Debug, Clone, Parser)]
#[command(
    name = SERVICE,
    version,
    about = "Relays the transactional outbox to Kafka",
    long_about = "Relays the transactional outbox to Kafka: wakes on LISTEN/NOTIFY (polling as a fallback), \
                  produces each row with an idempotent producer, clears it once acknowledged. Run any \
                  number of replicas: they share the outbox's shards through PostgreSQL advisory locks \
                  and keep every order's events in order."
)]
pub struct Config {
    /// Address of the admin HTTP server: /healthz, /readyz and /metrics.
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:8082")]
    pub admin_addr: SocketAddr,

    /// PostgreSQL database holding the outbox (command-service's database). Needs a
    /// direct connection or a session-mode pooler: the shard leases are session
    /// advisory locks.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:15432/orders_write", value_parser = postgres::DatabaseUrlParser, hide_env_values = true)]
    pub database_url: DatabaseUrl,

    /// Maximum number of pooled PostgreSQL connections (reads and clears; the lease
    /// session is one more). At least RELAY_WORKERS + 2.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 4)]
    pub database_pool_size: usize,

    /// Server-side limits of every PostgreSQL session.
    #[command(flatten)]
    pub database_session: postgres::SessionArgs,

    /// Topic the outbox rows are addressed to; /readyz checks that it exists (each
    /// row is published to the topic stored with it).
    #[arg(long, env = "ORDERS_TOPIC", default_value = "orders")]
    pub orders_topic: String,

    /// Channel the writers NOTIFY at commit; empty to rely on polling alone.
    #[arg(long, env = "NOTIFY_CHANNEL", default_value = "outbox")]
    pub notify_channel: String,

    /// How often an idle worker looks for rows without a notification (the fallback
    /// for a missed one).
    #[arg(long, env = "POLL_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub poll_interval: Duration,

    /// Rows read, produced and cleared per batch.
    #[arg(long, env = "BATCH_SIZE", default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,

    /// Workers in one replica, each with its own shards and its own pipeline of two
    /// batches (one read and produced while the other awaits its acknowledgements).
    #[arg(long, env = "RELAY_WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub relay_workers: u16,

    /// How often a replica checks which replicas are alive and takes or hands back
    /// shards; a dead replica's shards move within about this long.
    #[arg(long, env = "REBALANCE_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub rebalance_interval: Duration,

    /// At shutdown, how long an in-flight batch may wait for the broker's
    /// acknowledgements before it is left to the next owner. Keep it below
    /// SHUTDOWN_TIMEOUT.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// How long a batch may wait for the broker's acknowledgements before /readyz
    /// reports the relay not ready.
    #[arg(long, env = "STALL_THRESHOLD", default_value = "5s", value_parser = parse_duration)]
    pub stall_threshold: Duration,

    /// Longest delay between retries of a failed read, clear or publication.
    #[arg(long, env = "RETRY_BACKOFF_MAX", default_value = "5s", value_parser = parse_duration)]
    pub retry_backoff_max: Duration,

    /// Failed attempts to publish one row, for a reason of the record's own (its topic
    /// does not exist, the broker refuses it), after which the row is quarantined: set
    /// aside so that the other orders go on (the later events of its order wait). Until
    /// then only its order is held back between attempts; a record the producer itself
    /// refuses for good (too large for its `message.max.bytes`) is quarantined at once.
    /// See the `quarantine` subcommand.
    #[arg(long, env = "QUARANTINE_AFTER_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub quarantine_after_attempts: u32,

    /// Idle time before the first TCP keepalive probe on the lease session, on both
    /// ends: the database releases a silent relay's shards after about idle + interval *
    /// retries. Whole seconds.
    #[arg(long, env = "LEASE_KEEPALIVE_IDLE", default_value = "10s", value_parser = parse_duration)]
    pub lease_keepalive_idle: Duration,

    /// Time between unanswered keepalive probes on the lease session. Whole seconds.
    #[arg(long, env = "LEASE_KEEPALIVE_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub lease_keepalive_interval: Duration,

    /// Unanswered keepalive probes after which the lease session is dropped.
    #[arg(long, env = "LEASE_KEEPALIVE_RETRIES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub lease_keepalive_retries: u32,

    /// How long data sent on the lease session may stay unacknowledged before the
    /// connection is dropped (TCP_USER_TIMEOUT, both ends); 0 keeps the system default.
    #[arg(long, env = "LEASE_TCP_USER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub lease_tcp_user_timeout: Duration,

    /// An operation instead of running the relay.
    #[command(subcommand)]
    pub command: Option<ops::Command>,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

orders_runtime::service_config!(Config, SERVICE);

impl Config {
    /// The relay's options from this configuration.
    pub fn relay_options(&self) -> RelayOptions {
        let defaults = RelayOptions::default();
        RelayOptions {
            shards: orders_eventstore::OUTBOX_SHARDS,
            notify_channel: Some(self.notify_channel.clone()).filter(|c| !c.is_empty()),
            poll_interval: self.poll_interval,
            batch_size: self.batch_size as usize,
            workers: usize::from(self.relay_workers),
            rebalance_interval: self.rebalance_interval,
            drain_timeout: self.drain_timeout,
            stall_threshold: self.stall_threshold,
            retry_backoff_max: self.retry_backoff_max,
            quarantine_after: self.quarantine_after_attempts,
            lease_keepalive: SessionKeepalive {
                idle: self.lease_keepalive_idle,
                interval: self.lease_keepalive_interval,
                retries: self.lease_keepalive_retries,
                user_timeout: self.lease_tcp_user_timeout,
            },
            ..defaults
        }
    }
}

/// Registers the service's probes, HTTP server and the relay task on `rt`; returns the
/// address the HTTP server is bound to.
pub async fn build(config: Config, rt: &mut Runtime) -> anyhow::Result<SocketAddr> {
    use anyhow::Context as _;

    let pool = config.database_session.pool(&config.database_url, config.database_pool_size, SERVICE)?;
    let mut session = config.database_url.target()?;
    // The relay sets the session's keepalives itself (on both ends), from the options.
    session.config.application_name(format!("{SERVICE} leases")).connect_timeout(Duration::from_secs(5));
    let relay = Relay::new(pool.clone(), session, &config.kafka.producer_config(), config.relay_options())
        .context("create the relay")?;
    let status = relay.status();

    rt.add_probe(Probe::postgres("postgres", pool));
    rt.add_probe(Probe::kafka("kafka", &config.kafka.client_config(), vec![config.orders_topic.clone()])?);
    rt.add_probe(Probe::new("relay", move || {
        let status = status.clone();
        async move { status.check() }
    }));
    rt.spawn("relay", |token| async move { relay.run(token).await.context("outbox relay") });
    let addr = rt.serve_admin(config.admin_addr, 1, orders_runtime::openapi::routes(&orders_runtime::openapi::operations_only(
        "outbox-relay",
        env!("CARGO_PKG_VERSION"),
        "The outbox relay's admin endpoints: it publishes the event store's outbox to Kafka, in order, and has no API of its own.",
    )))?;
    Ok(addr)
}
