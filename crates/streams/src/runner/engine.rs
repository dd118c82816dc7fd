//! The engine of a run: the tasks of one consumer with the producer that writes for
//! them. It processes records into the open transaction, commits a cycle (outputs,
//! changelogs, input offsets), restores tasks from their changelogs and recovers from
//! an abortable error. The run loop and the rebalance callbacks ([`super`]) drive it.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rdkafka::{
    ClientContext, Message as _, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext},
    error::KafkaError,
    message::{BorrowedMessage, Header, Headers as _, OwnedHeaders},
    producer::{BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer},
};
use tracing::{debug, info};

use super::{Guarantee, Input, Output, RunError, TXN_TIMEOUT, Topology};

/// A task: an input topic and partition.
pub(super) type TaskId = (String, i32);

/// The producer's context: remembers the first delivery that failed since it was last
/// asked. A transaction's commit fails by itself when a record of it failed; without
/// transactions, the flush before committing offsets asks here.
#[derive(Debug, Default)]
pub(super) struct Deliveries {
    failed: Mutex<Option<KafkaError>>,
}

impl Deliveries {
    pub(super) fn take_failure(&self) -> Option<KafkaError> {
        lock(&self.failed).take()
    }
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        if let Err((error, _)) = result {
            lock(&self.failed).get_or_insert_with(|| error.clone());
        }
    }
}

pub(super) struct Engine<T: Topology> {
    pub(super) topology: T,
    pub(super) guarantee: Guarantee,
    pub(super) producer: ThreadedProducer<Deliveries>,
    pub(super) restorer: BaseConsumer,
    pub(super) changelogs: HashMap<String, String>,
    pub(super) tasks: BTreeMap<TaskId, T::Task>,
    /// Next offsets of the records processed in the open transaction.
    pub(super) offsets: BTreeMap<TaskId, i64>,
    pub(super) in_transaction: bool,
    pub(super) records: usize,
    /// The trace contexts (`traceparent`, `tracestate` headers) of the first
    /// [`orders_trace_context::MAX_LINKS`] records of the open transaction: its commit's span links to them.
    pub(super) trace_links: Vec<(String, Option<String>)>,
    pub(super) failed: Option<RunError>,
    /// Halted: nothing may be committed any more, not even by the revoke callback
    /// that closing the consumer runs.
    pub(super) halted: bool,
    /// Tasks waiting for or in their restore ([`Stop::tasks_restoring`](super::Stop::tasks_restoring)).
    pub(super) restoring: Arc<AtomicUsize>,
    /// No assignment yet: counted as one task restoring, so that a replica is not ready
    /// before it knows its partitions.
    pub(super) unassigned: bool,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T: Topology> Engine<T> {
    /// Produces a topology's output; the partitioner picks the partition from its key.
    pub(super) fn produce(&self, output: &Output) -> Result<(), KafkaError> {
        // No headers, no header list: each is an allocation in librdkafka.
        let headers = (!output.headers.is_empty()).then(|| {
            let mut headers = OwnedHeaders::new_with_capacity(output.headers.len());
            for (key, value) in &output.headers {
                headers = headers.insert(Header { key, value: Some(value.as_slice()) });
            }
            headers
        });
        self.send(&output.topic, None, &output.key, output.value.as_deref(), headers)
    }

    /// Produces one record in the open transaction, waiting while the producer's queue
    /// is full.
    pub(super) fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        value: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), KafkaError> {
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(key);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// Waits until every record sent is acknowledged (or failed). Not rdkafka's `flush`:
    /// with a `ThreadedProducer` its thread serves the delivery reports, and `flush` then
    /// waits in steps of 100 ms on a queue that stays empty, so that each flush lasted
    /// at least 100 ms (a commit every 100 ms spent half its time there). Asked without
    /// blocking, every millisecond, instead.
    pub(super) fn flush(&self) -> Result<(), KafkaError> {
        let deadline = Instant::now() + TXN_TIMEOUT;
        loop {
            match self.producer.flush(Duration::ZERO) {
                Ok(()) => return Ok(()),
                Err(KafkaError::Flush(rdkafka::types::RDKafkaErrorCode::OperationTimedOut))
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(error) => return Err(error),
            }
        }
    }

    pub(super) fn begin(&mut self) -> Result<(), KafkaError> {
        if !self.in_transaction && self.guarantee == Guarantee::ExactlyOnce {
            self.producer.begin_transaction()?;
            self.in_transaction = true;
        }
        Ok(())
    }

    pub(super) fn process(&mut self, message: &BorrowedMessage<'_>) -> Result<(), KafkaError> {
        let id = (message.topic().to_string(), message.partition());
        let Some(task) = self.tasks.get_mut(&id) else {
            debug!(topic = %id.0, partition = id.1, "a record of a partition without a task; skipped");
            return Ok(());
        };
        let input = Input {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key(),
            value: message.payload(),
            headers: message.headers(),
        };
        if self.trace_links.len() < orders_trace_context::MAX_LINKS
            && let Some(headers) = message.headers()
        {
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .and_then(|v| std::str::from_utf8(v).ok())
            };
            if let Some(traceparent) = header(orders_trace_context::TRACEPARENT) {
                let tracestate = header(orders_trace_context::TRACESTATE).map(str::to_string);
                self.trace_links.push((traceparent.to_string(), tracestate));
            }
        }
        let mut out = Vec::new();
        self.topology.process(task, input, &mut out);
        self.begin()?;
        for output in &out {
            self.produce(output)?;
        }
        self.offsets.insert(id, message.offset() + 1);
        self.records += 1;
        Ok(())
    }

    /// Punctuates every task, writes the changelogs and commits the transaction with the
    /// input offsets.
    pub(super) fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), KafkaError> {
        let started = Instant::now();
        let now_ms = now_ms();
        let mut out = Vec::new();
        let mut changelog = Vec::new();
        for ((topic, partition), task) in &mut self.tasks {
            self.topology.punctuate(task, now_ms, &mut out);
            let records = self.topology.changelog(task);
            if !records.is_empty() {
                changelog.push((self.changelogs[topic].clone(), *partition, records));
            }
        }
        if out.is_empty() && changelog.is_empty() && self.offsets.is_empty() {
            return Ok(());
        }
        // The commit's span: linked to the records' traces (a transaction is the child of
        // none of them), ending with the commit.
        let span = tracing::info_span!("streams commit", otel.kind = "consumer", records = self.records);
        for (traceparent, tracestate) in self.trace_links.drain(..) {
            orders_trace_context::add_link(&span, Some(&traceparent), tracestate.as_deref());
        }
        let _entered = span.enter();
        self.begin()?;
        for output in &out {
            self.produce(output)?;
        }
        for (topic, partition, records) in changelog {
            for (key, value) in records {
                self.send(&topic, Some(partition), &key, value.as_deref(), None)?;
            }
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in &self.offsets {
            offsets.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        match self.guarantee {
            Guarantee::ExactlyOnce => {
                if offsets.count() > 0 {
                    let metadata = consumer
                        .group_metadata()
                        .ok_or(KafkaError::Global(rdkafka::types::RDKafkaErrorCode::State))?;
                    self.producer.send_offsets_to_transaction(&offsets, &metadata, TXN_TIMEOUT)?;
                }
                // rdkafka's commit flushes first, with the 100 ms steps of `flush`: flushed
                // here, it finds nothing in flight.
                self.flush()?;
                self.producer.commit_transaction(TXN_TIMEOUT)?;
            }
            Guarantee::AtLeastOnce => {
                self.flush()?;
                if let Some(error) = self.producer.context().take_failure() {
                    return Err(error);
                }
                if offsets.count() > 0 {
                    consumer.commit(&offsets, CommitMode::Sync)?;
                }
            }
        }
        debug!(records = self.records, partitions = self.offsets.len(), guarantee = ?self.guarantee, "committed");
        metrics::counter!("streams_transactions_total", "outcome" => "committed").increment(1);
        metrics::histogram!("streams_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("streams_records_processed_total").increment(self.records as u64);
        self.in_transaction = false;
        self.offsets.clear();
        self.records = 0;
        Ok(())
    }

    /// The low and high watermarks of a changelog partition, asked again for a minute
    /// while its leader is not known yet (a topic just created, a broker restarting).
    pub(super) fn watermarks(&self, topic: &str, partition: i32) -> Result<(i64, i64), KafkaError> {
        use rdkafka::types::RDKafkaErrorCode::{
            LeaderNotAvailable, NotLeaderForPartition, UnknownTopicOrPartition,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.restorer.fetch_watermarks(topic, partition, TXN_TIMEOUT) {
                Err(KafkaError::MetadataFetch(
                    LeaderNotAvailable | NotLeaderForPartition | UnknownTopicOrPartition,
                )) if Instant::now() < deadline => {
                    debug!(topic, partition, "the changelog's leader is not known yet; asking again");
                    std::thread::sleep(Duration::from_millis(200));
                }
                result => return result,
            }
        }
    }

    /// Builds the task of `id` from its changelog, read to its end.
    pub(super) fn restore_task(&mut self, id: &TaskId) -> Result<(), RunError> {
        let started = Instant::now();
        let changelog = self.changelogs[&id.0].clone();
        let mut task = self.topology.new_task(&id.0, id.1);
        let (low, high) = self.watermarks(&changelog, id.1)?;
        let mut restored = 0u64;
        if high > low {
            let mut assignment = TopicPartitionList::new();
            assignment.add_partition_offset(&changelog, id.1, Offset::Beginning)?;
            self.restorer.assign(&assignment)?;
            let deadline = Instant::now() + Duration::from_secs(600);
            // The next offset to read, from the records read; asked of the consumer only
            // when a poll comes back empty (transaction markers take offsets too, so the
            // last records of a transactional changelog may end before `high`).
            let mut next = low;
            while next < high {
                if Instant::now() > deadline {
                    return Err(RunError::Restore {
                        topic: changelog,
                        partition: id.1,
                        reason: format!("not at the end ({high}) after 10 minutes, at {next}"),
                    });
                }
                let message = match self.restorer.poll(Duration::from_millis(100)) {
                    // At the end (`enable.partition.eof`): a transactional changelog ends
                    // with a commit marker, so no record reaches `high` itself.
                    Some(Err(KafkaError::PartitionEOF(partition))) if partition == id.1 => break,
                    other => other,
                };
                let Some(message) = message else {
                    next = self
                        .restorer
                        .position()?
                        .find_partition(&changelog, id.1)
                        .and_then(|e| e.offset().to_raw())
                        .unwrap_or(next);
                    continue;
                };
                let message = message?;
                next = message.offset() + 1;
                let key = message.key().unwrap_or_default();
                self.topology.restore(&mut task, key, message.payload()).map_err(|reason| {
                    RunError::Restore { topic: changelog.clone(), partition: id.1, reason }
                })?;
                restored += 1;
            }
            self.restorer.unassign()?;
        }
        let seconds = started.elapsed().as_secs_f64();
        metrics::histogram!("streams_restore_seconds").record(seconds);
        info!(topic = %id.0, partition = id.1, changelog = %changelog, records = restored, seconds, "task restored");
        self.tasks.insert(id.clone(), task);
        Ok(())
    }

    /// The first assignment is known (and restored): the run no longer counts as one task
    /// restoring.
    pub(super) fn assigned(&mut self) {
        if std::mem::take(&mut self.unassigned) {
            self.restoring.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Restores the tasks of `ids` one after the other, counted in
    /// [`Stop::tasks_restoring`](super::Stop::tasks_restoring) until each is done (or the first failure).
    pub(super) fn restore_all(&mut self, ids: &[TaskId]) -> Result<(), RunError> {
        self.restoring.fetch_add(ids.len(), Ordering::SeqCst);
        for (done, id) in ids.iter().enumerate() {
            let restored = self.restore_task(id);
            let left = if restored.is_ok() { 1 } else { ids.len() - done };
            self.restoring.fetch_sub(left, Ordering::SeqCst);
            restored?;
        }
        Ok(())
    }

    /// After an abortable error: abort, rebuild every task from its changelog, seek the
    /// consumer back to the committed offsets.
    pub(super) fn recover<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) -> Result<(), RunError> {
        if self.in_transaction {
            self.producer.abort_transaction(TXN_TIMEOUT)?;
        }
        metrics::counter!("streams_transactions_total", "outcome" => "aborted").increment(1);
        self.in_transaction = false;
        self.offsets.clear();
        self.records = 0;
        self.trace_links.clear();
        let ids: Vec<TaskId> = self.tasks.keys().cloned().collect();
        self.tasks.clear();
        self.restore_all(&ids)?;
        let committed = consumer.committed(TXN_TIMEOUT)?;
        for element in committed.elements() {
            let offset = match element.offset() {
                Offset::Invalid => Offset::Beginning,
                other => other,
            };
            consumer.seek(element.topic(), element.partition(), offset, TXN_TIMEOUT)?;
        }
        Ok(())
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
