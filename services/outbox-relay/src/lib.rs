//! outbox-relay: Publishes the outbox that command-service commits to PostgreSQL to Kafka, in order
//! per order, with an idempotent producer, clearing rows only once the broker acknowledged
//! them.
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
pub const SERVICE: &str = "outbox-relay";

/// Configuration, from flags or environment variables (`--help` lists them all).
#[derive(Debug, Clone, Parser)]
#[command(
    name = SERVICE,
    version,
    about = "Relays the transactional outbox to Kafka",
    long_about = "Relays the transactional outbox to Kafka.\n\nNot implemented yet: this build only serves /healthz, /readyz and /metrics."
)]
pub struct Config {
    /// Address of the admin HTTP server: /healthz, /readyz and /metrics.
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:8082")]
    pub admin_addr: SocketAddr,

    /// PostgreSQL database holding the outbox (command-service's database).
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://postgres@127.0.0.1:55432/orders_write")]
    pub database_url: DatabaseUrl,

    /// Maximum number of PostgreSQL connections.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 4)]
    pub database_pool_size: usize,

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
    rt.add_probe(Probe::kafka("kafka", &config.kafka.client_config(), Vec::new())?);
    let addr = rt.serve_http(config.admin_addr, 1, |_| {})?;
    Ok(addr)
}
