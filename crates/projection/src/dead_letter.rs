//! The dead-letter producer: records the handler refuses go to the dead-letter topic,
//! as they were, with why and where from in headers.

use std::time::Duration;

use rdkafka::{
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use tracing::warn;

use crate::{Error, Record, Result, Settings};

/// How long a dead letter may take to be acknowledged before the batch fails (and is
/// retried).
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Produces the dead letters of one projection.
pub(crate) struct DeadLetters {
    producer: FutureProducer,
    /// The dead-letter topic.
    topic: String,
    /// The projected topic (`dlq.origin.topic`).
    origin: String,
    /// The projection's name (`dlq.projection`).
    projection: String,
    /// Its consumer group (`dlq.consumer`, the header other consumers of the same
    /// dead-letter topic set too), or its name when the configuration has none.
    consumer: String,
}

impl DeadLetters {
    /// A producer made from `settings.producer`.
    pub(crate) fn new(settings: &Settings) -> Result<Self> {
        Ok(Self {
            producer: settings.producer.create()?,
            topic: settings.dead_letter_topic.clone(),
            origin: settings.topic.clone(),
            projection: settings.name.clone(),
            consumer: settings.consumer.get("group.id").unwrap_or(&settings.name).to_string(),
        })
    }

    /// Produces `record` to the dead-letter topic, and waits for its acknowledgement:
    /// its key, value and headers, plus `dlq.reason`, `dlq.origin.topic`,
    /// `dlq.origin.partition`, `dlq.origin.offset`, `dlq.projection` and `dlq.consumer`.
    pub(crate) async fn send(&self, record: &Record, reason: &str) -> Result<()> {
        warn!(
            projection = %self.projection,
            partition = record.partition,
            offset = record.offset,
            reason,
            "dead-lettering a record"
        );
        let partition = record.partition.to_string();
        let offset = record.offset.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 6);
        for (key, value) in &record.headers {
            headers = headers.insert(Header { key, value: value.as_deref() });
        }
        let headers = headers
            .insert(Header { key: "dlq.reason", value: Some(reason) })
            .insert(Header { key: "dlq.origin.topic", value: Some(self.origin.as_str()) })
            .insert(Header { key: "dlq.origin.partition", value: Some(partition.as_str()) })
            .insert(Header { key: "dlq.origin.offset", value: Some(offset.as_str()) })
            .insert(Header { key: "dlq.projection", value: Some(self.projection.as_str()) })
            .insert(Header { key: "dlq.consumer", value: Some(self.consumer.as_str()) });
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
