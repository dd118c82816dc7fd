//! stats-aggregator: Exactly-once windowed aggregation per user, in the manner of Kafka Streams: re-keys
//! order events by user, keeps windowed counts and revenue in a changelog-backed store and
//! emits them to `order-stats` inside Kafka transactions.
//!
//! Status: the service's wiring only. This build starts, serves `/healthz`, `/readyz`
//! (its dependencies reachable) and `/metrics`, and stops cleanly on SIGTERM; the work
//! described above is not implemented yet.

pub mod topology;

use std::net::SocketAddr;

use clap::Parser;
use orders_runtime::{Probe, Runtime, config::RuntimeArgs, kafka::KafkaArgs};

/// The service's name in logs, metrics and health answers.
pub const SERVICE: &str = "stats-aggregator";

/// Configuration, from flags or environment variables (`--help` lists them all).
#[derive(Debug, Clone, Parser)]
#[command(
    name = SERVICE,
    version,
    about = "Per-user windowed order statistics, exactly once",
    long_about = "Per-user windowed order statistics, exactly once.\n\nNot implemented yet: this build only serves /healthz, /readyz and /metrics."
)]
pub struct Config {
    /// Address of the admin HTTP server: /healthz, /readyz and /metrics.
    #[arg(long, env = "ADMIN_ADDR", default_value = "127.0.0.1:8084")]
    pub admin_addr: SocketAddr,

    /// Topic of the order events to aggregate.
    #[arg(long, env = "ORDERS_TOPIC", default_value = "orders")]
    pub orders_topic: String,

    /// Topic the per-user window aggregates are written to.
    #[arg(long, env = "ORDER_STATS_TOPIC", default_value = "order-stats")]
    pub stats_topic: String,

    /// Consumer group, transactional id prefix and internal topic prefix.
    #[arg(long, env = "APPLICATION_ID", default_value = "stats-aggregator")]
    pub application_id: String,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

orders_runtime::service_config!(Config, SERVICE);

/// Registers the service's probes, HTTP server and tasks on `rt`; returns the address
/// the HTTP server is bound to.
pub async fn build(config: Config, rt: &mut Runtime) -> anyhow::Result<SocketAddr> {
    rt.add_probe(Probe::kafka(
        "kafka",
        &config.kafka.client_config(),
        vec![config.orders_topic.clone(), config.stats_topic.clone()],
    )?);
    let addr = rt.serve_http(config.admin_addr, 1, |_| {})?;
    Ok(addr)
}
