//! `orders-load kafka-write`: one record written with a client's own settings (the
//! services' `KafkaArgs`: TLS, SASL, credentials from files), to show what the brokers
//! let that client do. `make security-test` runs it as a service's user against a topic
//! its ACLs do not grant, and expects the refusal.

use std::time::Duration;

use anyhow::Context as _;
use orders_runtime::kafka::KafkaArgs;
use rdkafka::producer::{FutureProducer, FutureRecord};

/// What to write where, and as whom.
#[derive(Debug, clap::Args)]
pub struct KafkaWriteArgs {
    /// The topic to write one record to.
    #[arg(long)]
    pub topic: String,

    #[command(flatten)]
    pub kafka: KafkaArgs,
}

/// Writes one record; fails with the broker's answer when it is refused.
pub async fn kafka_write(args: &KafkaWriteArgs) -> anyhow::Result<()> {
    let producer: FutureProducer = args
        .kafka
        .producer_config()
        .set("message.timeout.ms", "30000")
        .create()
        .context("creating a Kafka producer")?;
    let record = FutureRecord::to(&args.topic).key("access-check").payload("access-check");
    match producer.send(record, Duration::from_secs(30)).await {
        Ok(delivery) => {
            println!(
                "written to {} (partition {}, offset {})",
                args.topic, delivery.partition, delivery.offset
            );
            Ok(())
        }
        Err((e, _)) => Err(anyhow::anyhow!("writing to {} was refused: {e}", args.topic)),
    }
}
