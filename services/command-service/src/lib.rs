//! command-service: The write side: an event-sourced `Order` aggregate, an event store in PostgreSQL
//! with optimistic concurrency and a transactional outbox, behind an HTTP command API; it
//! also applies the commands other services send on `order-commands`.
//!
//! Status: the service's wiring only. This build starts, serves `/healthz`, `/readyz`
//! (its dependencies reachable) and `/metrics`, and stops cleanly on SIGTERM; the work
//! described above is not implemented yet.

use std::net::SocketAddr;

use clap::Parser;
use orders_runtime::{
    Probe, Runtime, ServiceConfig,
    config::RuntimeArgs,
    kafka::KafkaArgs,
    postgres::{self, DatabaseUrl},
};

/// The service's name in logs, metrics and health answers.
pub const SERVICE: &str = "command-service";

/// Configuration, from flags or environment variables (`--help` lists them all).
#[derive(Debug, Clone, Parser)]
#[command(
    name = SERVICE,
    version,
    about = "Order command API (event store and transactional outbox)",
    long_about = "Order command API (event store and transactional outbox).\n\nNot implemented yet: this build only serves /healthz, /readyz and /metrics."
)]
pub struct Config {
    /// Address of the HTTP server: the command API plus /healthz, /readyz and /metrics.
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Number of HTTP worker threads.
    #[arg(long, env = "HTTP_WORKERS", default_value_t = 2)]
    pub http_workers: usize,

    /// PostgreSQL database of the event store, snapshots, outbox and idempotency keys.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:55432/orders_write")]
    pub database_url: DatabaseUrl,

    /// Maximum number of PostgreSQL connections.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,

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

    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl ServiceConfig for Config {
    const NAME: &'static str = SERVICE;

    fn runtime(&self) -> &RuntimeArgs {
        &self.runtime
    }
}

/// Registers the service's probes, HTTP server and tasks on `rt`; returns the address
/// the HTTP server is bound to.
pub async fn build(config: Config, rt: &mut Runtime) -> anyhow::Result<SocketAddr> {
    let pool = postgres::pool(&config.database_url, config.database_pool_size, SERVICE)?;
    rt.add_probe(Probe::postgres("postgres", pool));
    rt.add_probe(Probe::kafka(
        "kafka",
        &config.kafka.client_config(),
        vec![config.orders_topic.clone(), config.commands_topic.clone(), config.dead_letter_topic.clone()],
    )?);
    let addr = rt.serve_http(config.http_addr, config.http_workers, |_| {})?;
    Ok(addr)
}
