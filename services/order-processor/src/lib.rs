//! order-processor: Reliable consumption of `orders`: retries, dead letters, ordered parallelism, an
//! inbox of handled events, and the order saga (reserve stock, create shipments, send
//! `ShipOrder` / `CancelOrder` commands).
//!
//! Status: the service's wiring only. This build starts, serves `/healthz`, `/readyz`
//! (its dependencies reachable) and `/metrics`, and stops cleanly on SIGTERM; the work
//! described above is not implemented yet.

use std::net::SocketAddr;

use clap::Parser;
use orders_runtime::{
    Probe, Runtime,
    config::RuntimeArgs,
    kafka::KafkaArgs,
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
    long_about = "Order saga: stock, shipments, commands.\n\nNot implemented yet: this build only serves /healthz, /readyz and /metrics."
)]
pub struct Config {
    /// Address of the admin HTTP server: /healthz, /readyz and /metrics.
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:8083")]
    pub admin_addr: SocketAddr,

    /// PostgreSQL database of the inbox, inventory and shipments.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:55432/order_processor")]
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

    /// Consumer group of the processor.
    #[arg(long, env = "CONSUMER_GROUP", default_value = "order-processor")]
    pub consumer_group: String,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

orders_runtime::service_config!(Config, SERVICE);

/// Registers the service's probes, HTTP server and tasks on `rt`; returns the address
/// the HTTP server is bound to.
pub async fn build(config: Config, rt: &mut Runtime) -> anyhow::Result<SocketAddr> {
    let pool = config.database_session.pool(&config.database_url, config.database_pool_size, SERVICE)?;
    rt.add_probe(Probe::postgres("postgres", pool));
    rt.add_probe(Probe::kafka(
        "kafka",
        &config.kafka.client_config(),
        vec![config.orders_topic.clone(), config.commands_topic.clone(), config.dead_letter_topic.clone()],
    )?);
    let addr = rt.serve_http(config.admin_addr, 1, |_| {})?;
    Ok(addr)
}
