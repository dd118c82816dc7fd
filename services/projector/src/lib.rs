//! projector: The CQRS read side: consumes `orders`, maintains the read model in PostgreSQL with
//! its Kafka position in the same transaction, and serves the query API.
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
pub const SERVICE: &str = "projector";

/// Configuration, from flags or environment variables (`--help` lists them all).
#[derive(Debug, Clone, Parser)]
#[command(
    name = SERVICE,
    version,
    about = "Read models and the query API",
    long_about = "Read models and the query API.\n\nNot implemented yet: this build only serves /healthz, /readyz and /metrics."
)]
pub struct Config {
    /// Address of the HTTP server: the query API plus /healthz, /readyz and /metrics.
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8081")]
    pub http_addr: SocketAddr,

    /// Number of HTTP worker threads.
    #[arg(long, env = "HTTP_WORKERS", default_value_t = 2)]
    pub http_workers: usize,

    /// PostgreSQL database of the read model and consumer checkpoints.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:55432/orders_read")]
    pub database_url: DatabaseUrl,

    /// Maximum number of PostgreSQL connections.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 8)]
    pub database_pool_size: usize,

    /// Topic of the order events to project.
    #[arg(long, env = "ORDERS_TOPIC", default_value = "orders")]
    pub orders_topic: String,

    /// Dead-letter topic for events that cannot be decoded or applied.
    #[arg(long, env = "DEAD_LETTER_TOPIC", default_value = "dlq.orders")]
    pub dead_letter_topic: String,

    /// Consumer group of the projection.
    #[arg(long, env = "CONSUMER_GROUP", default_value = "projector")]
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
        vec![config.orders_topic.clone(), config.dead_letter_topic.clone()],
    )?);
    let addr = rt.serve_http(config.http_addr, config.http_workers, |_| {})?;
    Ok(addr)
}
