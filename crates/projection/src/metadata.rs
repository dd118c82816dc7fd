//! What the brokers' metadata says of the topic: its partitions and where they start.

use std::{collections::BTreeMap, time::Duration};

use rdkafka::{
    ClientConfig,
    consumer::{BaseConsumer, Consumer as _},
};

use crate::{Error, Result, Settings};

/// The partitions of `topic`, from the brokers' metadata (a client made from `config`).
/// [`Error::UnknownTopic`] when it does not exist or has none.
pub async fn topic_partitions(config: &ClientConfig, topic: &str) -> Result<Vec<i32>> {
    let (config, topic) = (config.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = config.create()?;
        partitions_of(&client, &topic)
    })
    .await?
}

fn partitions_of(client: &BaseConsumer, topic: &str) -> Result<Vec<i32>> {
    let metadata = client.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        return Err(Error::UnknownTopic(topic.to_string()));
    }
    Ok(partitions)
}

/// The low and high watermarks of every partition of `topic` (where it starts, and the
/// offset its next record will get): how much a projection from the start has to read.
pub async fn watermarks(config: &ClientConfig, topic: &str) -> Result<BTreeMap<i32, (i64, i64)>> {
    let (config, topic) = (config.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = config.create()?;
        let timeout = Duration::from_secs(10);
        partitions_of(&client, &topic)?
            .into_iter()
            .map(|partition| Ok((partition, client.fetch_watermarks(&topic, partition, timeout)?)))
            .collect()
    })
    .await?
}

/// The partitions of the topic (from the brokers' metadata) and the low watermark of
/// each: where a partition without a stored position starts. An explicit offset, because
/// librdkafka resolves `Offset::Beginning` with a lookup that costs about half a second.
pub(crate) async fn partitions_and_starts(settings: &Settings) -> Result<BTreeMap<i32, i64>> {
    let marks = watermarks(&settings.consumer, &settings.topic).await?;
    Ok(marks.into_iter().map(|(partition, (low, _))| (partition, low)).collect())
}
