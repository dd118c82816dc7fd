//! Producing one batch in two steps, so that the next batch can be read while this
//! one is in flight: [`Publisher::enqueue`] hands the rows to the producer in id order,
//! [`Publisher::acknowledged`] waits for every acknowledgement (through a broker outage
//! if need be) and reports which rows the broker acknowledged.

use std::{
    collections::HashSet,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use futures::{StreamExt, channel::oneshot::Canceled, stream::FuturesUnordered};
use rdkafka::{
    ClientConfig,
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{
        DeliveryFuture, FutureProducer, FutureRecord, Producer, future_producer::OwnedDeliveryResult,
    },
    types::RDKafkaErrorCode,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{metric, store::OutboxRow};

/// What became of a batch.
#[derive(Debug, Default)]
pub(crate) struct Published {
    /// Rows the broker acknowledged: safe to clear.
    pub(crate) acked: Vec<i64>,
    /// The first failure (enqueue refused or delivery failed); its row and the rows not
    /// enqueued after it stay in the outbox.
    pub(crate) failure: Option<String>,
    /// Shutdown came and the drain deadline passed before every acknowledgement: the
    /// unacknowledged rows' outcome is unknown, so they stay.
    pub(crate) abandoned: bool,
}

/// The delivery report of one record, with what the relay needs to know about its row.
struct Pending {
    id: i64,
    created_at: SystemTime,
    delivery: DeliveryFuture,
}

impl Future for Pending {
    type Output = (i64, SystemTime, Result<OwnedDeliveryResult, Canceled>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.delivery).poll(cx).map(|outcome| (self.id, self.created_at, outcome))
    }
}

/// A batch handed to the producer, whose acknowledgements are still to come.
pub(crate) struct Enqueued {
    producer: Arc<FutureProducer>,
    pending: FuturesUnordered<Pending>,
    /// Ids of every row read for the batch (enqueued or not): left out of the next read
    /// until this batch is finished.
    pub(crate) ids: HashSet<i64>,
    published: Published,
}

impl std::fmt::Debug for Enqueued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enqueued").field("rows", &self.ids.len()).finish_non_exhaustive()
    }
}

/// The producer configuration the relay uses: `base` with the settings its guarantees
/// need (`enable.idempotence=true`, `acks=all`, `message.timeout.ms=0`) forced, and
/// `linger.ms=1` unless `base` sets it.
pub fn producer_config(base: &ClientConfig) -> ClientConfig {
    let mut config = base.clone();
    // Aliases of the settings below would compete with them.
    config.remove("delivery.timeout.ms");
    config.remove("request.required.acks");
    config.set("enable.idempotence", "true").set("acks", "all").set("message.timeout.ms", "0");
    if config.get("linger.ms").is_none() && config.get("queue.buffering.max.ms").is_none() {
        // Batches are formed by the relay's reads; waiting longer only adds latency.
        config.set("linger.ms", "1");
    }
    config
}

/// The relay's producer, replaced when librdkafka reports a fatal error (after which an
/// idempotent producer cannot send any more).
pub(crate) struct Publisher {
    config: ClientConfig,
    producer: Mutex<Arc<FutureProducer>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    pub(crate) fn new(base: &ClientConfig) -> Result<Self, KafkaError> {
        let config = producer_config(base);
        let producer = Arc::new(config.create()?);
        Ok(Self { config, producer: Mutex::new(producer) })
    }

    fn producer(&self) -> Arc<FutureProducer> {
        Arc::clone(&self.producer.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// After a failure: replaces the producer if it is fatally broken.
    fn renew_if_fatal(&self, producer: &FutureProducer) {
        let Some((code, reason)) = producer.client().fatal_error() else { return };
        tracing::error!(?code, reason, "fatal Kafka producer error; creating a new producer");
        match self.config.create::<FutureProducer>() {
            Ok(fresh) => *self.producer.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh),
            Err(e) => tracing::error!(error = %e, "cannot create a new Kafka producer"),
        }
    }

    /// Hands `rows` to the producer in id order. A row waits for room in the queue
    /// rather than letting a later one overtake it; when `token` is cancelled, it waits
    /// at most `drain` more.
    pub(crate) async fn enqueue(
        &self,
        rows: &[OutboxRow],
        token: &CancellationToken,
        drain: Duration,
    ) -> Enqueued {
        let producer = self.producer();
        let mut published = Published::default();
        let pending = FuturesUnordered::new();
        let mut deadline: Option<Instant> = None;
        'rows: for row in rows {
            let headers =
                row.headers.iter().fold(OwnedHeaders::new_with_capacity(row.headers.len()), |h, (k, v)| {
                    h.insert(Header { key: k, value: Some(v.as_bytes()) })
                });
            let mut record = FutureRecord::<[u8], [u8]>::to(&row.topic)
                .key(row.key.as_slice())
                .payload(row.payload.as_slice())
                .headers(headers);
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(Pending { id: row.id, created_at: row.created_at, delivery });
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        if token.is_cancelled() {
                            let until = *deadline.get_or_insert_with(|| Instant::now() + drain);
                            if Instant::now() >= until {
                                published.abandoned = true;
                                break 'rows;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        published.failure =
                            Some(format!("cannot enqueue row {} to {}: {e}", row.id, row.topic));
                        break 'rows;
                    }
                }
            }
        }
        Enqueued { producer, pending, ids: rows.iter().map(|r| r.id).collect(), published }
    }

    /// Waits for every acknowledgement of `batch`. When `token` is cancelled meanwhile,
    /// waits at most `drain` more, then gives up on the rest.
    pub(crate) async fn acknowledged(
        &self,
        batch: Enqueued,
        token: &CancellationToken,
        drain: Duration,
    ) -> Published {
        let Enqueued { producer, mut pending, mut published, .. } = batch;
        let mut deadline: Option<Instant> = published.abandoned.then(Instant::now);
        let mut acked = 0u64;
        loop {
            let next = match deadline {
                Some(until) => match tokio::time::timeout_at(until, pending.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        published.abandoned = true;
                        break;
                    }
                },
                None => tokio::select! {
                    next = pending.next() => next,
                    () = token.cancelled() => {
                        deadline = Some(Instant::now() + drain);
                        continue;
                    }
                },
            };
            let Some((id, created_at, outcome)) = next else { break };
            match outcome {
                Ok(Ok(_delivery)) => {
                    published.acked.push(id);
                    acked += 1;
                    let latency = SystemTime::now().duration_since(created_at).unwrap_or_default();
                    metrics::histogram!(metric::PUBLISH_LATENCY).record(latency.as_secs_f64());
                }
                Ok(Err((e, _message))) => {
                    published.failure.get_or_insert_with(|| format!("delivery of row {id} failed: {e}"));
                }
                Err(_canceled) => {
                    published.failure.get_or_insert_with(|| format!("delivery of row {id} was cancelled"));
                }
            }
        }
        metrics::counter!(metric::PUBLISHED).increment(acked);
        if published.failure.is_some() {
            self.renew_if_fatal(&producer);
        }
        published
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarantees_override_the_callers_settings() {
        let mut base = ClientConfig::new();
        base.set("acks", "1").set("enable.idempotence", "false").set("message.timeout.ms", "5000");
        let config = producer_config(&base);
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("message.timeout.ms"), Some("0"));
        assert_eq!(config.get("linger.ms"), Some("1"));
        base.set("linger.ms", "20");
        assert_eq!(producer_config(&base).get("linger.ms"), Some("20"));
    }
}
