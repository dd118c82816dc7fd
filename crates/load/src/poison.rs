//! `orders-load poison`: bad records put on the topics the services consume, and the
//! check that each ended in its dead-letter topic with a reason while the consumers went
//! on.
//!
//! - `inject` produces, on the events topic and on the commands topic, one record of
//!   each kind: garbage bytes, a valid envelope whose payload is a case the services do
//!   not know (a field number past the schema's), and an oversized record (512 KiB).
//!   Each has a key of its own (a fresh order id, so no real order waits behind it) and a
//!   `poison` header naming its kind. The keys go to `--file`.
//! - `check` reads the dead-letter topics and finds, for each key of the file, dead
//!   letters with a `dlq.reason` from `--event-consumers` consumers for an event poison
//!   (one per consumer of the events topic, told apart by their `dlq.consumer` header;
//!   a consumer that writes none counts as one, "unnamed"), from one for a command
//!   poison. A consumer that dead-letters a record twice (at least once) counts once.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use rdkafka::{
    ClientConfig, Message as _,
    message::{Header, Headers as _, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The poison subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PoisonCommand {
    /// Produce the bad records and write their keys to `--file`.
    Inject(PoisonArgs),
    /// Check that each record of `--file` was dead-lettered with a reason.
    Check(PoisonArgs),
}

/// Where the poison goes and where its dead letters are.
#[derive(Debug, Clone, clap::Args)]
pub struct PoisonArgs {
    /// Kafka's bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    kafka_bootstrap_servers: String,
    /// The events topic.
    #[arg(long, env = "ORDERS_TOPIC", default_value = "orders")]
    orders_topic: String,
    /// The commands topic.
    #[arg(long, env = "ORDER_COMMANDS_TOPIC", default_value = "order-commands")]
    order_commands_topic: String,
    /// The events' dead-letter topic.
    #[arg(long, env = "ORDERS_DEAD_LETTER_TOPIC", default_value = "dlq.orders")]
    orders_dead_letter_topic: String,
    /// The commands' dead-letter topic.
    #[arg(long, env = "COMMANDS_DEAD_LETTER_TOPIC", default_value = "dlq.order-commands")]
    commands_dead_letter_topic: String,
    /// The consumers of the events topic, each of which dead-letters an event poison.
    #[arg(long, default_value_t = 3)]
    event_consumers: usize,
    /// How long `check` waits for the dead letters.
    #[arg(long, default_value = "120s", value_parser = crate::parse_duration)]
    settle: Duration,
    /// The poison's keys: written by `inject`, read by `check`.
    #[arg(long)]
    file: PathBuf,
}

/// One record injected.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Injected {
    /// Its topic.
    pub topic: String,
    /// Its key.
    pub key: String,
    /// `garbage`, `unknown-case` or `oversized`.
    pub kind: String,
}

/// Runs a poison subcommand.
///
/// # Errors
/// When Kafka refuses, or (`check`) a record was not dead-lettered as it should be.
pub async fn run(command: PoisonCommand) -> anyhow::Result<()> {
    match command {
        PoisonCommand::Inject(args) => inject(&args).await,
        PoisonCommand::Check(args) => check(&args).await,
    }
}

/// A valid envelope whose payload is a case the schema does not have: field 99, a
/// message of one string.
fn unknown_case(envelope: impl prost::Message) -> Vec<u8> {
    let mut bytes = envelope.encode_to_vec();
    // Tag 99, wire type 2 (length-delimited): (99 << 3) | 2 = 794, varint 0x9a 0x06.
    bytes.extend_from_slice(&[0x9a, 0x06, 0x04, 0x0a, 0x02, b'h', b'i']);
    bytes
}

async fn inject(args: &PoisonArgs) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.kafka_bootstrap_servers)
        .set("message.max.bytes", "1000000")
        .create()
        .context("creating a Kafka producer")?;
    let mut injected = Vec::new();
    for (topic, is_event) in [(&args.orders_topic, true), (&args.order_commands_topic, false)] {
        let order_id = Uuid::now_v7();
        let envelope = if is_event {
            let event = orders_events::pb::EventEnvelope {
                event_id: Uuid::now_v7().to_string(),
                order_id: order_id.to_string(),
                version: 1,
                occurred_at: Some(prost_types::Timestamp {
                    seconds: chrono::Utc::now().timestamp(),
                    nanos: 0,
                }),
                correlation_id: Uuid::new_v4().to_string(),
                ..Default::default()
            };
            unknown_case(event)
        } else {
            let command = orders_events::pb::CommandEnvelope {
                command_id: Uuid::new_v4().to_string(),
                order_id: order_id.to_string(),
                correlation_id: Uuid::new_v4().to_string(),
                ..Default::default()
            };
            unknown_case(command)
        };
        let kinds: [(&str, Vec<u8>); 3] = [
            ("garbage", b"\xff\xfenot a protobuf message \x00\x01".to_vec()),
            ("unknown-case", envelope),
            ("oversized", vec![0xab; 512 * 1024]),
        ];
        for (kind, payload) in kinds {
            let key = format!("{}", Uuid::now_v7());
            let headers = OwnedHeaders::new().insert(Header { key: "poison", value: Some(kind) });
            let record = FutureRecord::to(topic).key(&key).payload(&payload).headers(headers);
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| anyhow::anyhow!("producing the {kind} poison to {topic}: {e}"))?;
            println!("[poison] {kind} on {topic}, key {key}");
            injected.push(Injected { topic: topic.clone(), key, kind: kind.into() });
        }
    }
    std::fs::write(&args.file, serde_json::to_vec_pretty(&injected)?)
        .with_context(|| format!("writing {}", args.file.display()))?;
    Ok(())
}

async fn check(args: &PoisonArgs) -> anyhow::Result<()> {
    let injected: Vec<Injected> = serde_json::from_slice(
        &std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?,
    )?;
    let deadline = std::time::Instant::now() + args.settle;
    loop {
        let missing = missing(args, &injected).await?;
        if missing.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            for m in &missing {
                println!("[poison] {m}");
            }
            bail!(
                "{} poison records were not dead-lettered as expected after {:?}",
                missing.len(),
                args.settle
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// What is not dead-lettered yet (printing what is, once all is).
async fn missing(args: &PoisonArgs, injected: &[Injected]) -> anyhow::Result<Vec<String>> {
    let mut missing = Vec::new();
    let mut found_lines: Vec<String> = Vec::new();
    for (topic, dead_letters, expected) in [
        (&args.orders_topic, &args.orders_dead_letter_topic, args.event_consumers),
        (&args.order_commands_topic, &args.commands_dead_letter_topic, 1),
    ] {
        // Per key: each consumer that dead-lettered it (its `dlq.consumer` header, or
        // "unnamed" for a consumer that writes none) and its reason.
        let mut reasons: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let (bootstrap, name) = (args.kafka_bootstrap_servers.clone(), dead_letters.clone());
        let records = tokio::task::spawn_blocking(move || {
            crate::reconcile::read_topic(&bootstrap, &name, Duration::from_secs(120), |m| {
                let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
                let header = |name: &str| {
                    m.headers().and_then(|h| {
                        h.iter()
                            .find(|h| h.key == name)
                            .and_then(|h| h.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    })
                };
                (key, header("dlq.reason"), header("dlq.consumer").unwrap_or_else(|| "unnamed".into()))
            })
        })
        .await??;
        for (key, reason, consumer) in records {
            if let Some(reason) = reason {
                reasons.entry(key).or_default().insert(consumer, reason);
            }
        }
        for poison in injected.iter().filter(|p| &p.topic == topic) {
            let empty = BTreeMap::new();
            let found = reasons.get(&poison.key).unwrap_or(&empty);
            if found.len() < expected {
                missing.push(format!(
                    "the {} poison on {topic} (key {}) was dead-lettered on {dead_letters} by {:?}, not by {expected} consumers",
                    poison.kind,
                    poison.key,
                    found.keys().collect::<Vec<_>>()
                ));
            } else {
                found_lines.push(format!(
                    "[poison] {} on {topic}: dead-lettered on {dead_letters} by {found:?}",
                    poison.kind
                ));
            }
        }
    }
    if missing.is_empty() {
        for line in found_lines {
            println!("{line}");
        }
    }
    Ok(missing)
}
