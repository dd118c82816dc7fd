//! Producing one batch in two steps, so that the next batch can be read while this
//! one is in flight: [`Publisher::enqueue`] hands the rows to the producer in id order
//! (and stops at the first row the producer refuses), [`Publisher::acknowledged`] waits
//! for every acknowledgement (through a broker outage if need be) and reports which
//! rows the broker acknowledged and which failed, and why ([`PublishError`]).

use std::{
    collections::HashSet,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use futures::{StreamExt, channel::oneshot::Canceled, stream::FuturesUnordered};
use orders_trace_context::{TRACEPARENT, TRACESTATE};
use rdkafka::{
    ClientConfig,
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{
        DeliveryFuture, FutureProducer, FutureRecord, Producer as _, PurgeConfig,
        future_producer::OwnedDeliveryResult,
    },
    types::RDKafkaErrorCode,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{metric, store::OutboxRow};

/// Why one row was not published.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PublishError {
    /// The producer refused the record at once (it was not sent); the rows after it in
    /// the batch were not handed to the producer either.
    #[error("cannot enqueue row {id} to {topic}: {error}")]
    Enqueue { id: i64, key: Vec<u8>, topic: String, error: KafkaError },
    /// The broker or the producer failed the record.
    #[error("delivery of row {id} failed: {error}")]
    Delivery { id: i64, key: Vec<u8>, error: KafkaError },
    /// The producer went away before reporting (a bug or a shutdown).
    #[error("delivery of row {id} was cancelled")]
    Cancelled { id: i64, key: Vec<u8> },
}

impl PublishError {
    /// The row that failed.
    pub(crate) fn id(&self) -> i64 {
        match self {
            Self::Enqueue { id, .. } | Self::Delivery { id, .. } | Self::Cancelled { id, .. } => *id,
        }
    }

    /// The key of the row that failed.
    pub(crate) fn key(&self) -> &[u8] {
        match self {
            Self::Enqueue { key, .. } | Self::Delivery { key, .. } | Self::Cancelled { key, .. } => key,
        }
    }

    /// Whether the producer refused the record before sending it, for a reason that
    /// the same record meets on every attempt with the same configuration: larger than
    /// the producer's `message.max.bytes`, or a topic name that is invalid or that the
    /// cluster's metadata says does not exist. Such a row is quarantined at its first
    /// attempt: retrying only holds up the other rows.
    pub(crate) fn is_local_refusal(&self) -> bool {
        use RDKafkaErrorCode as C;
        match self {
            Self::Enqueue { error, .. } => matches!(
                error.rdkafka_error_code(),
                Some(
                    C::MessageSizeTooLarge
                        | C::InvalidMessageSize
                        | C::InvalidTopic
                        | C::UnknownTopic
                        | C::UnknownTopicOrPartition
                )
            ),
            Self::Delivery { .. } | Self::Cancelled { .. } => false,
        }
    }

    /// Whether the failure is the record's own, so that retrying cannot help and the
    /// row counts an attempt towards its quarantine: the topic does not exist or may not
    /// be written, the record is too large or invalid. Failures of the producer or the
    /// connection are not (they are retried without counting).
    pub(crate) fn is_record_error(&self) -> bool {
        let error = match self {
            Self::Enqueue { error, .. } | Self::Delivery { error, .. } => error,
            Self::Cancelled { .. } => return false,
        };
        use RDKafkaErrorCode as C;
        matches!(
            error.rdkafka_error_code(),
            Some(
                C::MessageSizeTooLarge
                    | C::InvalidMessageSize
                    | C::InvalidMessage
                    | C::InvalidRecord
                    | C::InvalidTopic
                    | C::UnknownTopic
                    | C::UnknownTopicOrPartition
                    | C::UnknownPartition
                    | C::TopicAuthorizationFailed
                    | C::PolicyViolation
                    | C::InvalidArgument
                    | C::BadMessage
            )
        )
    }
}

/// What became of a batch.
#[derive(Debug, Default)]
pub(crate) struct Published {
    /// Rows the broker acknowledged: safe to clear.
    pub(crate) acked: Vec<i64>,
    /// The failed rows; they, and the rows not enqueued after an enqueue failure, stay
    /// in the outbox.
    pub(crate) failures: Vec<PublishError>,
    /// Shutdown came and the drain deadline passed before every acknowledgement: the
    /// unacknowledged rows' outcome is unknown, so they stay.
    pub(crate) abandoned: bool,
    /// Rows sent alone (suspects of an earlier batch-level refusal, see
    /// [`Publisher::enqueue`]): the broker's verdict on them is their own.
    pub(crate) alone: Vec<i64>,
}

impl Published {
    /// The failure that stopped the batch: the row with the smallest id whose failure
    /// is the record's own (the one to count towards quarantine: the failures after it
    /// are usually its consequences, such as a producer stopped by the gapless
    /// guarantee), else the first failure.
    pub(crate) fn failure(&self) -> Option<&PublishError> {
        self.failures
            .iter()
            .filter(|f| f.is_record_error())
            .min_by_key(|f| f.id())
            .or_else(|| self.failures.iter().min_by_key(|f| f.id()))
    }
}

/// The delivery report of one record, with what the relay needs to know about its row.
struct Pending {
    id: i64,
    key: Vec<u8>,
    created_at: SystemTime,
    delivery: DeliveryFuture,
    /// The record's `outbox publish` span: it ends when [`settle`] takes the report.
    _span: tracing::Span,
}

impl Future for Pending {
    type Output = (i64, Vec<u8>, SystemTime, Result<OwnedDeliveryResult, Canceled>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.delivery)
            .poll(cx)
            .map(|outcome| (self.id, std::mem::take(&mut self.key), self.created_at, outcome))
    }
}

/// A batch handed to the producer, whose acknowledgements are still to come.
pub(crate) struct Enqueued {
    producer: Arc<ProducerHandle>,
    pending: FuturesUnordered<Pending>,
    /// Ids of the rows handed to the producer: left out of the next read until this
    /// batch is finished. The rows of the batch that were not (after an enqueue failure
    /// or at shutdown) are not in it: the next read must return them again.
    pub(crate) ids: HashSet<i64>,
    published: Published,
}

impl Enqueued {
    /// Whether some rows of the batch were not handed to the producer (a row was
    /// refused, or shutdown came while the queue was full). Such a batch must be
    /// finished before the next read: a read past it would publish later rows of the
    /// keys of the rows left behind before them.
    pub(crate) fn incomplete(&self) -> bool {
        !self.published.failures.is_empty() || self.published.abandoned
    }
}

impl std::fmt::Debug for Enqueued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enqueued").field("rows", &self.ids.len()).finish_non_exhaustive()
    }
}

/// The producer configuration the relay uses: `base` with the settings its guarantees
/// need (`enable.idempotence=true`, `enable.gapless.guarantee=true`, `acks=all`,
/// `message.timeout.ms=0`) forced, and `linger.ms=1` unless `base` sets it.
pub fn producer_config(base: &ClientConfig) -> ClientConfig {
    let mut config = base.clone();
    // Aliases of the settings below would compete with them.
    config.remove("delivery.timeout.ms");
    config.remove("request.required.acks");
    config.remove("max.in.flight");
    config
        .set("enable.idempotence", "true")
        .set("enable.gapless.guarantee", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "0")
        // One request in flight per broker: a broker that does not know a producer id
        // yet (a fresh producer, the first request of a partition) accepts any
        // sequence number, so a request sent behind one it refuses would be written
        // after the gap before the gapless guarantee could stop the producer.
        .set("max.in.flight.requests.per.connection", "1");
    if config.get("linger.ms").is_none() && config.get("queue.buffering.max.ms").is_none() {
        // Batches are formed by the relay's reads; waiting longer only adds latency.
        config.set("linger.ms", "1");
    }
    config
}

/// A producer that is dropped on a blocking thread: dropping a librdkafka producer
/// purges its queues, flushes for up to 500 ms and joins its polling thread, which must
/// not happen on an async worker thread.
pub(crate) struct ProducerHandle(Option<FutureProducer>);

impl std::ops::Deref for ProducerHandle {
    type Target = FutureProducer;

    fn deref(&self) -> &FutureProducer {
        // Only `drop` takes it out.
        self.0.as_ref().unwrap_or_else(|| unreachable!("a producer is only taken by its drop"))
    }
}

impl Drop for ProducerHandle {
    fn drop(&mut self) {
        if let Some(producer) = self.0.take() {
            drop_blocking(producer);
        }
    }
}

/// Drops `value` on Tokio's blocking threads when called inside a runtime (at once
/// otherwise: outside a runtime, blocking is allowed).
pub(crate) fn drop_blocking<T: Send + 'static>(value: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || drop(value));
        }
        Err(_) => drop(value),
    }
}

/// The relay's producer, replaced when librdkafka reports a fatal error (after which an
/// idempotent producer cannot send any more).
pub(crate) struct Publisher {
    config: ClientConfig,
    producer: Mutex<Arc<ProducerHandle>>,
    /// Producers created to replace a broken one.
    renewals: AtomicU64,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    pub(crate) fn new(base: &ClientConfig) -> Result<Self, KafkaError> {
        let config = producer_config(base);
        let producer = Arc::new(ProducerHandle(Some(config.create()?)));
        Ok(Self { config, producer: Mutex::new(producer), renewals: AtomicU64::new(0) })
    }

    fn producer(&self) -> Arc<ProducerHandle> {
        Arc::clone(&self.producer.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// After a failure: replaces the producer if it is fatally broken (the replaced one
    /// is dropped on a blocking thread once its last batch is done with it).
    fn renew_if_fatal(&self, producer: &Arc<ProducerHandle>, failure: Option<&PublishError>) {
        let Some((code, reason)) = producer.client().fatal_error() else { return };
        match failure.filter(|f| f.is_record_error()) {
            // The gapless guarantee stopped the producer because of one record.
            Some(record) => {
                tracing::warn!(
                    ?code,
                    reason,
                    row = record.id(),
                    "producer stopped by a refused record; creating a new producer"
                )
            }
            None => tracing::error!(?code, reason, "fatal Kafka producer error; creating a new producer"),
        }
        if let Err(e) = self.replace(producer) {
            tracing::error!(error = %e, "cannot create a new Kafka producer");
        }
    }

    /// Replaces the producer with a fresh one if it still is `failed`; returns whether
    /// it did (`false`: another worker already replaced it). The check and the swap
    /// happen under one lock: workers failing on the same fatal error replace it once
    /// (P1 -> P2, never P1 -> P2 -> P3, which would leave a pipeline's two batches on two
    /// healthy producers with no order between them).
    fn replace(&self, failed: &Arc<ProducerHandle>) -> Result<bool, KafkaError> {
        let mut current = self.producer.lock().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&current, failed) {
            return Ok(false);
        }
        let fresh = Arc::new(ProducerHandle(Some(self.config.create()?)));
        let old = std::mem::replace(&mut *current, fresh);
        drop(current);
        self.renewals.fetch_add(1, Ordering::Relaxed);
        // The last batch using it drops it, on a blocking thread.
        drop(old);
        Ok(true)
    }

    /// Hands `rows` to the producer in id order: to the producer of `after`, the batch
    /// still in flight before them, if any (the rows of a pipelined batch must follow
    /// that batch's rows on the same producer, even if it was replaced meanwhile: a
    /// replaced producer fails them, which is safe, where a fresh one could publish them
    /// before the earlier rows it was never given), else to the current one. A row waits
    /// for room in the queue rather than letting a later one overtake it; when `token`
    /// is cancelled, it waits at most `drain` more.
    ///
    /// A row of `suspects` (one of several rows that failed together in an earlier
    /// batch, such as a record batch the broker refused as a whole, where the error does
    /// not say which row was at fault) is sent alone: after every row handed before it
    /// was acknowledged, and acknowledged itself before the next row is handed, so that
    /// the broker's verdict on it is its own. A failure there stops the batch, as a
    /// refused row does. `after` must be `None` when `rows` hold a suspect.
    pub(crate) async fn enqueue(
        &self,
        rows: &[OutboxRow],
        after: Option<&Enqueued>,
        suspects: &HashSet<i64>,
        token: &CancellationToken,
        drain: Duration,
    ) -> Enqueued {
        let producer = after.map_or_else(|| self.producer(), |batch| Arc::clone(&batch.producer));
        let mut published = Published::default();
        let mut pending = FuturesUnordered::new();
        let mut deadline: Option<Instant> = None;
        let mut ids = HashSet::with_capacity(rows.len());
        'rows: for row in rows {
            let alone = suspects.contains(&row.id);
            if alone {
                settle(&producer, &mut pending, &mut published, token, drain, &mut deadline).await;
                if !published.failures.is_empty() || published.abandoned {
                    break 'rows;
                }
            }
            // Its span continues the trace of the row's writer (the `traceparent` the
            // row was written with), and the record carries the span's own context on.
            let span = tracing::info_span!(
                "outbox publish",
                otel.kind = "producer",
                messaging.system = "kafka",
                messaging.destination.name = %row.topic,
                outbox.id = row.id,
            );
            let header = |name: &str| row.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
            orders_trace_context::set_parent(&span, header(TRACEPARENT), header(TRACESTATE));
            let handed_on = orders_trace_context::traceparent_of(&span);
            let mut headers = row.headers.iter().fold(
                OwnedHeaders::new_with_capacity(row.headers.len() + 1),
                |h, (k, v)| {
                    let value = match &handed_on {
                        Some(traceparent) if k == TRACEPARENT => traceparent.as_str(),
                        _ => v.as_str(),
                    };
                    h.insert(Header { key: k, value: Some(value.as_bytes()) })
                },
            );
            if let Some(traceparent) = &handed_on
                && header(TRACEPARENT).is_none()
            {
                headers = headers.insert(Header { key: TRACEPARENT, value: Some(traceparent.as_bytes()) });
            }
            let mut record = FutureRecord::<[u8], [u8]>::to(&row.topic)
                .key(row.key.as_slice())
                .payload(row.payload.as_slice())
                .headers(headers);
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        pending.push(Pending {
                            id: row.id,
                            key: row.key.clone(),
                            created_at: row.created_at,
                            delivery,
                            _span: span,
                        });
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
                    Err((error, _)) => {
                        published.failures.push(PublishError::Enqueue {
                            id: row.id,
                            key: row.key.clone(),
                            topic: row.topic.clone(),
                            error,
                        });
                        break 'rows;
                    }
                }
            }
            ids.insert(row.id);
            if alone {
                settle(&producer, &mut pending, &mut published, token, drain, &mut deadline).await;
                published.alone.push(row.id);
                if !published.failures.is_empty() || published.abandoned {
                    break 'rows;
                }
            }
        }
        Enqueued { producer, pending, ids, published }
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
        settle(&producer, &mut pending, &mut published, token, drain, &mut deadline).await;
        if !published.failures.is_empty() {
            self.renew_if_fatal(&producer, published.failure());
        }
        published
    }
}

/// How often [`settle`] looks whether its producer has failed fatally.
const FATAL_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Waits for every delivery report of `pending`, recording them in `published`. When
/// `token` is cancelled meanwhile, waits until `deadline` (set to `drain` from then if
/// not set yet), then gives up on the rest (`published.abandoned`).
///
/// While `producer` reports a fatal error, its queues are purged every
/// [`FATAL_CHECK_INTERVAL`]: librdkafka purges them once when the error is raised but
/// spares the requests in flight, and a record of one of those that is then put back
/// for a retry waits in a queue the stopped producer never sends, with no timeout
/// (`message.timeout.ms=0`), so the batch would never settle. A purged record fails
/// with a purge error, which is not the record's fault: it is retried on the new
/// producer.
async fn settle(
    producer: &FutureProducer,
    pending: &mut FuturesUnordered<Pending>,
    published: &mut Published,
    token: &CancellationToken,
    drain: Duration,
    deadline: &mut Option<Instant>,
) {
    let mut acked = 0u64;
    let mut check = tokio::time::interval(FATAL_CHECK_INTERVAL);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let until = *deadline;
        // Reports that came are taken first: past the deadline too (a shutdown drops
        // only what has not come), and an empty batch settles at once.
        let next = tokio::select! {
            biased;
            next = pending.next() => next,
            () = token.cancelled(), if until.is_none() => {
                *deadline = Some(Instant::now() + drain);
                continue;
            }
            () = tokio::time::sleep_until(until.unwrap_or_else(Instant::now)), if until.is_some() => {
                published.abandoned = true;
                break;
            }
            _ = check.tick() => {
                if producer.client().fatal_error().is_some() {
                    producer.purge(PurgeConfig::default().queue().non_blocking());
                }
                continue;
            }
        };
        let Some((id, key, created_at, outcome)) = next else { break };
        match outcome {
            Ok(Ok(_delivery)) => {
                published.acked.push(id);
                acked += 1;
                let latency = SystemTime::now().duration_since(created_at).unwrap_or_default();
                metrics::histogram!(metric::PUBLISH_LATENCY).record(latency.as_secs_f64());
            }
            Ok(Err((error, _message))) => published.failures.push(PublishError::Delivery { id, key, error }),
            Err(_canceled) => published.failures.push(PublishError::Cancelled { id, key }),
        }
    }
    metrics::counter!(metric::PUBLISHED).increment(acked);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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
        assert_eq!(config.get("enable.gapless.guarantee"), Some("true"));
        assert_eq!(config.get("max.in.flight.requests.per.connection"), Some("1"));
        assert_eq!(config.get("linger.ms"), Some("1"));
        base.set("linger.ms", "20");
        assert_eq!(producer_config(&base).get("linger.ms"), Some("20"));
    }

    fn publisher() -> Publisher {
        let mut base = ClientConfig::new();
        // Nothing listens there: records are queued, never delivered.
        base.set("bootstrap.servers", "127.0.0.1:9");
        Publisher::new(&base).unwrap()
    }

    fn rows(ids: std::ops::RangeInclusive<i64>) -> Vec<OutboxRow> {
        ids.map(|id| OutboxRow {
            id,
            topic: "t".into(),
            key: b"k".to_vec(),
            payload: id.to_string().into_bytes(),
            headers: Vec::new(),
            created_at: SystemTime::now(),
        })
        .collect()
    }

    /// Finding: batch `n` in flight on producer P1, P1 replaced by P2 after another
    /// worker's failure: the pipelined batch `n + 1` (later versions of `n`'s keys)
    /// must go on P1, behind `n`, not on P2, where nothing orders it after `n`.
    #[tokio::test]
    async fn a_pipelined_batch_goes_on_the_producer_of_the_batch_before_it() {
        let publisher = publisher();
        let token = CancellationToken::new();
        let drain = Duration::from_secs(1);
        let n = publisher.enqueue(&rows(1..=3), None, &HashSet::new(), &token, drain).await;
        assert!(!n.incomplete());
        assert!(publisher.replace(&n.producer).unwrap(), "replaced, as after a fatal error");
        let next = publisher.enqueue(&rows(4..=6), Some(&n), &HashSet::new(), &token, drain).await;
        assert!(Arc::ptr_eq(&next.producer, &n.producer), "batch n + 1 went on another producer than n");
        let fresh = publisher.enqueue(&rows(7..=7), None, &HashSet::new(), &token, drain).await;
        assert!(Arc::ptr_eq(&fresh.producer, &publisher.producer()), "a new chain starts on the current one");
        assert!(!Arc::ptr_eq(&fresh.producer, &n.producer));
    }

    /// Finding: workers failing on the same fatal error must replace the producer once
    /// (P1 -> P2), not P1 -> P2 -> P3, which would let two healthy producers carry
    /// batches of one pipeline.
    #[test]
    fn workers_failing_together_replace_the_producer_once() {
        let publisher = publisher();
        let failed = publisher.producer();
        let workers = 8;
        let barrier = std::sync::Barrier::new(workers);
        let replaced: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        publisher.replace(&failed).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| usize::from(h.join().unwrap())).sum()
        });
        assert_eq!(publisher.renewals.load(Ordering::Relaxed), 1, "producers created");
        assert_eq!(replaced, 1);
        assert!(!Arc::ptr_eq(&publisher.producer(), &failed));
    }

    #[test]
    fn the_failure_that_counts_is_the_first_refused_record() {
        let code = |c| KafkaError::MessageProduction(c);
        let published = Published {
            failures: vec![
                PublishError::Delivery { id: 3, key: Vec::new(), error: code(RDKafkaErrorCode::Fatal) },
                PublishError::Delivery {
                    id: 9,
                    key: Vec::new(),
                    error: code(RDKafkaErrorCode::MessageSizeTooLarge),
                },
                PublishError::Delivery {
                    id: 7,
                    key: Vec::new(),
                    error: code(RDKafkaErrorCode::UnknownTopic),
                },
            ],
            ..Published::default()
        };
        assert_eq!(published.failure().map(PublishError::id), Some(7));
        let published = Published {
            failures: vec![
                PublishError::Cancelled { id: 5, key: Vec::new() },
                PublishError::Delivery { id: 4, key: Vec::new(), error: code(RDKafkaErrorCode::Fatal) },
            ],
            ..Published::default()
        };
        let failure = published.failure().unwrap();
        assert_eq!(failure.id(), 4);
        assert!(!failure.is_record_error(), "a fatal producer error is not the record's fault");
    }

    /// Whatever it holds (a producer purging, flushing and joining its thread), a
    /// value given to `drop_blocking` is dropped on a blocking thread, not on the
    /// runtime's only worker thread.
    #[tokio::test(flavor = "current_thread")]
    async fn producers_are_dropped_where_blocking_is_allowed() {
        struct Probe(std::sync::mpsc::Sender<std::thread::ThreadId>);
        impl Drop for Probe {
            fn drop(&mut self) {
                let _ = self.0.send(std::thread::current().id());
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        drop_blocking(Probe(tx));
        let dropped_on = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30)))
            .await
            .unwrap()
            .expect("dropped");
        assert_ne!(dropped_on, std::thread::current().id(), "dropped on the async worker thread");
    }
}
