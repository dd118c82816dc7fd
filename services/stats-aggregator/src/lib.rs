//! stats-aggregator: exactly-once windowed aggregation per user, in the manner of Kafka
//! Streams, on the `orders-streams` crate. Stage 1 reads `orders` per order (dropping
//! duplicates by version, remembering payments) and re-keys what matters by user
//! through a repartition topic; stage 2 keeps per-user, per-currency event-time windows
//! and emits them to `order-stats`: updates at most once per emit interval, and a final
//! record when a window closes. Both stages' state lives in compacted changelog topics;
//! outputs, changelogs and input offsets commit in one Kafka transaction.
//!
//! Poison on `orders` (undecodable, an unknown event type, no value) goes to the
//! dead-letter topic in the same transaction, with its original bytes and headers and
//! `dlq.reason`, `dlq.origin.*` and `dlq.consumer`. `/readyz` fails its `restore` probe
//! while tasks restore their state (after an assignment), so that a rolling update waits
//! for a new replica to catch up before it stops the next old one.

pub mod aggregator;
pub mod topology;

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use orders_runtime::{Probe, Runtime, config::RuntimeArgs, kafka::KafkaArgs};
use orders_streams::Windows;

use crate::aggregator::{Aggregator, Topics};

/// The service's name in logs, metrics and health answers.
pub const SERVICE: &str = "stats-aggregator";

/// The suffixes of the internal topics, each `<APPLICATION_ID>-<suffix>`: the
/// repartition by user, the changelogs of the two stores, the late events.
pub const INTERNAL_TOPICS: &[&str] = &[REPARTITION, ORDER_STATE_CHANGELOG, WINDOWS_CHANGELOG, LATE_EVENTS];
const REPARTITION: &str = "user-activity-repartition";
const ORDER_STATE_CHANGELOG: &str = "order-state-changelog";
const WINDOWS_CHANGELOG: &str = "windows-changelog";
const LATE_EVENTS: &str = "late-events";

/// Configuration, from flags or environment variables (`--help` lists them all).
#[derive(Debug, Clone, Parser)]
#[command(
    name = SERVICE,
    version,
    about = "Per-user windowed order statistics, exactly once",
    long_about = "Per-user windowed order statistics, exactly once: event-time windows per user and currency over the order events, emitted to order-stats inside Kafka transactions."
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

    /// This instance's name, stable across its restarts and unique among the replicas
    /// (the pod name): its transactional id is `<APPLICATION_ID>-<INSTANCE_ID>`.
    #[arg(long, env = "INSTANCE_ID", default_value = "local")]
    pub instance_id: String,

    /// Topic of the dead letters (undecodable records).
    #[arg(long, env = "DEAD_LETTER_TOPIC", default_value = "dlq.orders")]
    pub dead_letter_topic: String,

    /// Window size (tumbling, aligned to the epoch).
    #[arg(long, env = "WINDOW_SIZE", default_value = "1h", value_parser = orders_runtime::config::parse_duration)]
    pub window_size: Duration,

    /// Window advance, for hopping windows (at most the size); tumbling when unset.
    #[arg(long, env = "WINDOW_ADVANCE", value_parser = orders_runtime::config::parse_duration)]
    pub window_advance: Option<Duration>,

    /// How late an event may arrive (after its window's end, in stream time) and still
    /// count; later ones go to the late-events topic.
    #[arg(long, env = "WINDOW_GRACE", default_value = "5m", value_parser = orders_runtime::config::parse_duration)]
    pub window_grace: Duration,

    /// At most one update of a window to order-stats per interval (its final record is
    /// always sent).
    #[arg(long, env = "EMIT_INTERVAL", default_value = "1s", value_parser = orders_runtime::config::parse_duration)]
    pub emit_interval: Duration,

    /// Close windows by wall-clock time too, not only by stream time (which stands
    /// still on a partition that receives nothing): a choice Kafka Streams does not
    /// offer; events lagging the wall clock by more than the grace are then late.
    #[arg(long, env = "WALL_CLOCK_CLOSE", default_value_t = false)]
    pub wall_clock_close: bool,

    /// How often a transaction commits (outputs become visible to read_committed readers).
    #[arg(long, env = "COMMIT_INTERVAL", default_value = "100ms", value_parser = orders_runtime::config::parse_duration)]
    pub commit_interval: Duration,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

orders_runtime::service_config!(Config, SERVICE);

impl Config {
    /// The internal topics: `<APPLICATION_ID>-<name>`.
    pub fn internal_topic(&self, name: &str) -> String {
        format!("{}-{name}", self.application_id)
    }

    /// The topology this configuration describes.
    ///
    /// # Errors
    /// When the window settings do not make windows.
    pub fn aggregator(&self) -> anyhow::Result<Aggregator> {
        let windows = match self.window_advance {
            Some(advance) => Windows::hopping(self.window_size, advance),
            None => Windows::tumbling(self.window_size),
        }
        .context("the window settings")?
        .with_grace(self.window_grace);
        Ok(Aggregator {
            topics: Topics {
                orders: self.orders_topic.clone(),
                repartition: self.internal_topic(REPARTITION),
                stats: self.stats_topic.clone(),
                late: self.internal_topic(LATE_EVENTS),
                dead_letters: self.dead_letter_topic.clone(),
            },
            windows,
            emit_interval: self.emit_interval,
            wall_clock_close: self.wall_clock_close,
            consumer: self.application_id.clone(),
        })
    }

    /// How the topology runs.
    pub fn run_settings(&self) -> orders_streams::Settings {
        let inputs = [
            (self.orders_topic.clone(), self.internal_topic(ORDER_STATE_CHANGELOG)),
            (self.internal_topic(REPARTITION), self.internal_topic(WINDOWS_CHANGELOG)),
        ];
        let refs: Vec<(&str, &str)> = inputs.iter().map(|(i, c)| (i.as_str(), c.as_str())).collect();
        orders_streams::Settings {
            commit_interval: self.commit_interval,
            ..orders_streams::Settings::new(
                &self.application_id,
                format!("{}-{}", self.application_id, self.instance_id),
                &refs,
                self.kafka.client_config(),
            )
        }
    }
}

/// Registers the service's probes, HTTP server and tasks on `rt`; returns the address
/// the HTTP server is bound to.
pub async fn build(config: Config, rt: &mut Runtime) -> anyhow::Result<SocketAddr> {
    let aggregator = config.aggregator()?;
    let settings = config.run_settings();
    let mut topics =
        vec![config.orders_topic.clone(), config.stats_topic.clone(), config.dead_letter_topic.clone()];
    topics.extend(settings.inputs.iter().flat_map(|(input, changelog)| [input.clone(), changelog.clone()]));
    topics.push(aggregator.topics.late.clone());
    topics.sort();
    topics.dedup();
    rt.add_probe(Probe::kafka("kafka", &config.kafka.client_config(), topics)?);
    let stop = orders_streams::Stop::new();
    // Not ready while tasks restore their state: a rolling update waits for the new
    // replica to have caught up on its changelogs before it stops the next old one.
    rt.add_probe(Probe::new("restore", {
        let stop = stop.clone();
        move || {
            let restoring = stop.tasks_restoring();
            async move {
                match restoring {
                    0 => Ok(()),
                    n => Err(format!("restoring the state of {n} tasks from their changelogs")),
                }
            }
        }
    }));
    // From 0, so that the first dead letter shows as an increase.
    metrics::counter!(aggregator::metric::DEAD_LETTERS).increment(0);
    rt.spawn("aggregator", move |token| async move {
        let _stop_on_drop = stop.on_drop();
        let mut running = tokio::task::spawn_blocking({
            let stop = stop.clone();
            move || orders_streams::run(aggregator, &settings, &stop)
        });
        let joined = tokio::select! {
            joined = &mut running => joined,
            () = token.cancelled() => {
                stop.stop();
                running.await
            }
        };
        joined.context("the aggregator thread")?.context("the aggregator")
    });
    let addr = rt.serve_admin(config.admin_addr, 1, orders_runtime::openapi::routes(&orders_runtime::openapi::operations_only(
        "stats-aggregator",
        env!("CARGO_PKG_VERSION"),
        "The stats aggregator's admin endpoints: it aggregates `orders` into per-user windows on `order-stats`, exactly once, and has no API of its own.",
    )))?;
    Ok(addr)
}
