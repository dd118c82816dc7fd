//! The dead-letter producer: a record that failed for good goes to the dead-letter
//! topic as it was (key, value, headers), with why and where from in headers:
//!
//! | header | value |
//! |---|---|
//! | `dlq.reason` | why (the handler's error, or why it was not handled) |
//! | `dlq.attempts` | the attempts made |
//! | `dlq.origin.topic`, `dlq.origin.partition`, `dlq.origin.offset` | where it was read |
//! | `dlq.consumer` | the consumer that dead-lettered it (each tool handles its own) |
//! | `dlq.dead-lettered-at` | when, in milliseconds since the epoch |

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::{
    ClientConfig,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

use crate::{Error, Record, Result};

/// The header names.
pub mod header {
    /// Why the record was dead-lettered.
    pub const REASON: &str = "dlq.reason";
    /// The attempts made.
    pub const ATTEMPTS: &str = "dlq.attempts";
    /// The topic it was read from.
    pub const ORIGIN_TOPIC: &str = "dlq.origin.topic";
    /// The partition it was read from.
    pub const ORIGIN_PARTITION: &str = "dlq.origin.partition";
    /// Its offset there.
    pub const ORIGIN_OFFSET: &str = "dlq.origin.offset";
    /// The consumer that dead-lettered it.
    pub const CONSUMER: &str = "dlq.consumer";
    /// When, in milliseconds since the epoch.
    pub const DEAD_LETTERED_AT: &str = "dlq.dead-lettered-at";
}

/// How long one dead letter may take to be acknowledged before the attempt fails.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Produces one consumer's dead letters.
pub(crate) struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    consumer: String,
}

impl DeadLetters {
    /// An idempotent producer (`acks=all`) made from `config`.
    pub(crate) fn new(config: &ClientConfig, topic: &str, consumer: &str) -> Result<Self> {
        let mut config = config.clone();
        config.set("enable.idempotence", "true").set("acks", "all").set("linger.ms", "1");
        for property in ["group.id", "enable.auto.commit", "auto.offset.reset", "isolation.level"] {
            config.remove(property);
        }
        Ok(Self { producer: config.create()?, topic: topic.to_string(), consumer: consumer.to_string() })
    }

    /// Produces `record` to the dead-letter topic and waits for its acknowledgement.
    pub(crate) async fn send(&self, record: &Record, reason: &str, attempts: u32) -> Result<()> {
        let partition = record.partition.to_string();
        let offset = record.offset.to_string();
        let attempts = attempts.to_string();
        let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis().to_string();
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 7);
        for (key, value) in &record.headers {
            headers = headers.insert(Header { key, value: value.as_deref() });
        }
        let headers = headers
            .insert(Header { key: header::REASON, value: Some(reason) })
            .insert(Header { key: header::ATTEMPTS, value: Some(attempts.as_str()) })
            .insert(Header { key: header::ORIGIN_TOPIC, value: Some(record.topic.as_str()) })
            .insert(Header { key: header::ORIGIN_PARTITION, value: Some(partition.as_str()) })
            .insert(Header { key: header::ORIGIN_OFFSET, value: Some(offset.as_str()) })
            .insert(Header { key: header::CONSUMER, value: Some(self.consumer.as_str()) })
            .insert(Header { key: header::DEAD_LETTERED_AT, value: Some(at.as_str()) });
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = &record.key {
            out = out.key(key.as_slice());
        }
        if let Some(payload) = &record.payload {
            out = out.payload(payload.as_slice());
        }
        self.producer.send(out, SEND_TIMEOUT).await.map_err(|(e, _)| Error::Kafka(e))?;
        Ok(())
    }
}
