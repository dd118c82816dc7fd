//! order-processor: reacts to order events with the order saga (reserve stock, create
//! shipments, send `ShipOrder` / `CancelOrder` commands), on the reliable consumer of
//! the `orders-consumer` crate: key-ordered parallel handling, retries, dead letters
//! that hold back the later events of their order, an inbox for effects once.
//!
//! - [`saga`]: what each event does, in a transaction with its inbox row and the
//!   outbox rows of its commands;
//! - [`inventory`]: the stock of tracked SKUs and its admin API;
//! - [`build`]: migrations, the consumer, the in-process outbox relay to
//!   `order-commands`, probes and the admin HTTP server;
//! - [`ops`]: the `stock` and `dlq` subcommands.
//!
//! Commands leave through the processor's own transactional outbox (in
//! `order_processor`), relayed in-process by the `orders-outbox` relay, rather than
//! through a Kafka transaction: the effects live in PostgreSQL, and only a PostgreSQL
//! transaction can make "stock reserved" and "CancelOrder sent" commit together with the
//! inbox row. A Kafka transaction would commit the offsets and the command atomically
//! but not the database effect.

pub mod inventory;
pub mod ops;
pub mod saga;

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use saga::{Batching, Saga};

use clap::Parser;
use deadpool_postgres::Pool;
use orders_consumer::{Consumer, Retry, Settings, Store};
use orders_outbox::{Relay, RelayOptions};
use orders_runtime::{
    Probe, Runtime,
    config::{RuntimeArgs, parse_duration},
    kafka::KafkaArgs,
    lifecycle::migrations_applied,
    postgres::{self, DatabaseUrl},
};

/// The service's name in logs, metrics and health answers.
pub const SERVICE: &str = "order-processor";

/// Configuration, from flags or environment variables (`--help` lists them all).
#[derive(Debug, Clone, Parser)]
#[command(
    name = SERVICE,
    version,
    about = "Order saga: stock, shipments, commands",
    long_about = "Order saga: reserves stock when an order is created, creates a shipment and sends \
                  ShipOrder when it is paid, sends CancelOrder when stock is short; admin API for the \
                  inventory on the admin port."
)]
pub struct Config {
    /// Address of the admin HTTP server: /healthz, /readyz and /metrics.
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:8083")]
    pub admin_addr: SocketAddr,

    /// PostgreSQL database of the inbox, inventory and shipments.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:15432/order_processor", value_parser = postgres::DatabaseUrlParser, hide_env_values = true)]
    pub database_url: DatabaseUrl,

    /// Maximum number of PostgreSQL connections.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 8)]
    pub database_pool_size: usize,

    /// Server-side limits of every PostgreSQL session.
    #[command(flatten)]
    pub database_session: postgres::SessionArgs,

    /// Topic of the order events to react to.
    #[arg(long, env = "ORDERS_TOPIC", default_value = "orders")]
    pub orders_topic: String,

    /// Topic to send commands to (ship, cancel).
    #[arg(long, env = "ORDER_COMMANDS_TOPIC", default_value = "order-commands")]
    pub commands_topic: String,

    /// Dead-letter topic for events that fail after their retries.
    #[arg(long, env = "DEAD_LETTER_TOPIC", default_value = "dlq.orders")]
    pub dead_letter_topic: String,

    /// Consumer group of the processor (also the owner of its inbox and dead letters).
    #[arg(long, env = "CONSUMER_GROUP", default_value = "order-processor")]
    pub consumer_group: String,

    /// At most this many events handled at once (different orders; one order's events
    /// are always handled one after the other, in order).
    #[arg(long, env = "CONSUMER_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub consumer_concurrency: u16,

    /// Saga transactions in flight at once (each on a pooled connection); events
    /// waiting meanwhile are applied together in the next one.
    #[arg(long, env = "SAGA_COMMITTERS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    pub saga_committers: u16,

    /// Most events applied in one saga transaction (1: a transaction per event).
    #[arg(long, env = "SAGA_MAX_BATCH", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    pub saga_max_batch: u16,

    /// Attempts of an event whose handling fails for a transient reason, before it is
    /// dead-lettered.
    #[arg(long, env = "RETRY_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub retry_max_attempts: u32,

    /// The first retry's delay (doubling, with jitter, up to RETRY_BACKOFF_MAX).
    #[arg(long, env = "RETRY_BACKOFF_MIN", default_value = "100ms", value_parser = parse_duration)]
    pub retry_backoff_min: Duration,

    /// The longest delay between two attempts.
    #[arg(long, env = "RETRY_BACKOFF_MAX", default_value = "10s", value_parser = parse_duration)]
    pub retry_backoff_max: Duration,

    #[command(subcommand)]
    pub command: Option<ops::Command>,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

orders_runtime::service_config!(Config, SERVICE);

impl Config {
    /// How the saga groups its steps into transactions.
    pub fn batching(&self) -> Batching {
        Batching {
            committers: usize::from(self.saga_committers),
            max_batch: usize::from(self.saga_max_batch),
        }
    }

    /// The consumer's settings.
    pub fn consumer_settings(&self) -> Settings {
        Settings {
            concurrency: usize::from(self.consumer_concurrency),
            retry: Retry {
                max_attempts: self.retry_max_attempts,
                min_delay: self.retry_backoff_min,
                max_delay: self.retry_backoff_max,
            },
            ..Settings::new(
                &self.consumer_group,
                &[&self.orders_topic],
                self.kafka.client_config(),
                &self.dead_letter_topic,
            )
        }
    }
}

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Applies every schema the processor needs in `order_processor`: the consumer's
/// (inbox, dead letters, parked events), the outbox's and the saga's.
pub async fn migrate(pool: &Pool, consumer: &str) -> anyhow::Result<()> {
    Store::new(pool.clone(), consumer).migrate().await.context("consumer tables")?;
    orders_outbox::migrate(pool).await.context("outbox tables")?;
    // A fixed lock key for "order-processor migrations".
    orders_postgres::migrate(pool, 7401223004, &embedded::migrations::runner(), "saga")
        .await
        .context("saga tables")?;
    Ok(())
}

/// Registers the service's probes, HTTP server and tasks on `rt`; returns the address
/// the HTTP server is bound to.
pub async fn build(config: Config, rt: &mut Runtime) -> anyhow::Result<SocketAddr> {
    let pool = config.database_session.pool(&config.database_url, config.database_pool_size, SERVICE)?;
    rt.add_probe(Probe::postgres("postgres", pool.clone()));
    rt.add_probe(Probe::kafka(
        "kafka",
        &config.kafka.client_config(),
        vec![config.orders_topic.clone(), config.commands_topic.clone(), config.dead_letter_topic.clone()],
    )?);
    let migrated = rt.migrate_in_background("schema", {
        let (pool, consumer) = (pool.clone(), config.consumer_group.clone());
        move || {
            let (pool, consumer) = (pool.clone(), consumer.clone());
            async move { migrate(&pool, &consumer).await }
        }
    });

    let saga = Saga::new(pool.clone(), &config.consumer_group, &config.commands_topic, config.batching());
    let consumer = Consumer::new(
        config.consumer_settings(),
        Store::new(pool.clone(), &config.consumer_group),
        saga.router(),
    )
    .context("create the consumer")?;
    rt.spawn("consumer", {
        let mut migrated = migrated.clone();
        move |token| async move {
            if !migrations_applied(&mut migrated, &token).await {
                return Ok(());
            }
            consumer.run(token).await.context("order events consumer")
        }
    });

    let mut session = config.database_url.target()?;
    session
        .config
        .application_name(format!("{SERVICE} outbox leases"))
        .connect_timeout(Duration::from_secs(5));
    let relay = Relay::new(
        pool.clone(),
        session,
        &config.kafka.producer_config(),
        RelayOptions {
            shards: orders_outbox::OUTBOX_SHARDS,
            notify_channel: None,
            ..RelayOptions::default()
        },
    )
    .context("create the command relay")?;
    let status = relay.status();
    rt.add_probe(Probe::new("relay", move || {
        let status = status.clone();
        async move { status.check() }
    }));
    rt.spawn("relay", {
        let mut migrated = migrated;
        move |token| async move {
            if !migrations_applied(&mut migrated, &token).await {
                return Ok(());
            }
            relay.run(token).await.context("command outbox relay")
        }
    });
    let addr = rt.serve_admin(config.admin_addr, 1, inventory::routes(pool))?;
    Ok(addr)
}
