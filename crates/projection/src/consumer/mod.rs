//! [`Projection`]: the consume loop. See the [crate docs](crate) for what it guarantees.
//!
//! One loop owns the consumer and the partitions' state; the transactions run as tasks
//! of their own, so that polling and applying overlap and several partitions apply at
//! once (librdkafka hands out records a partition at a time, so one poll rarely spans
//! many partitions). Each turn of the loop:
//!
//! 1. handles the assignment changes the rebalance callback queued (reading the stored
//!    positions of newly assigned partitions and scheduling a seek to them) and starts
//!    the pending seeks (on a blocking thread: librdkafka's seek waits for the fetcher,
//!    which the loop's thread must not; records of a seeking partition are dropped until
//!    the seek is done, and the loop does not poll while seeks run);
//! 2. launches a batch for every partition that has records waiting and no batch in
//!    flight, oldest waiting first, while fewer than the pool's size are in flight;
//! 3. waits for a batch or the seeks to finish (then records the position, metrics and
//!    the Kafka hint of the batch, or which seeks are done) or polls: up to `max_batch` records, at most `max_wait` after the first,
//!    each filed under its partition (or dropped: not assigned, before the position,
//!    waiting for a seek, past a target).
//!
//! At most one batch per partition is in flight: its records are applied in offset
//! order, and the next batch of the partition expects the position the previous one
//! committed. Polling pauses while `(in-flight limit + 1) * max_batch` records wait:
//! enough to read past one busy partition's records (librdkafka queues them in runs of
//! up to a fetch's worth) to the next partitions'.

//!
//! [`assignment`] handles assignment changes, rewinds and seeks. The other parts live
//! next to it: [`crate::state`] (each partition's state),
//! [`crate::apply`] (one batch's transaction), [`crate::dead_letter`],
//! [`crate::meters`], [`crate::context`] (the librdkafka callbacks) and
//! [`crate::metadata`].

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use deadpool_postgres::Pool;
use futures::{StreamExt as _, stream::FuturesUnordered};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    error::KafkaError,
    message::Headers,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

mod assignment;

use self::assignment::{Seeks, sought};
use crate::{
    Error, Handler, Record, Result, Settings,
    apply::Shared,
    consumer_config,
    context::Context,
    dead_letter::DeadLetters,
    metadata::partitions_and_starts,
    meters::{Meters, Rates},
    positions::Positions,
    state::{Applied, Finished, Mode, PartitionState, Until},
};

/// How long a poll waits for a first record before the loop turns again (to retry
/// seeks, refresh lag and notice the end of partitions).
const IDLE_POLL: Duration = Duration::from_millis(200);

/// A batch just committed, as the [`Projection::on_commit`] observer sees it.
#[derive(Debug, Clone, Copy)]
pub struct Committed<'a> {
    /// The partition.
    pub partition: i32,
    /// Its new position.
    pub next_offset: i64,
    /// How many records the batch held.
    pub records: usize,
    /// The records themselves, oldest first (for example to wake read-your-writes
    /// waiters by key).
    pub batch: &'a [Record],
    /// For each record with a timestamp, the time from that timestamp to the commit.
    pub latencies: &'a [Duration],
}

type Observer = Arc<dyn Fn(&Committed<'_>) + Send + Sync>;

/// A projection of one topic into PostgreSQL through a [`Handler`]. See the
/// [crate docs](crate).
pub struct Projection<H> {
    shared: Arc<Shared<H>>,
    mode: Mode,
    consumer: Arc<StreamConsumer<Context>>,
    partitions: BTreeMap<i32, PartitionState>,
    /// Partitions whose stored position must be read again (and sought to).
    reload: BTreeSet<i32>,
    /// Partitions with a batch in flight.
    busy: BTreeSet<i32>,
    /// The partition of each batch task, to know which one a panicked task held.
    tasks: HashMap<tokio::task::Id, i32>,
    /// At most this many batches in flight (the pool's size).
    max_in_flight: usize,
    generation: u64,
    observer: Option<Observer>,
    rates: Rates,
}

impl<H> fmt::Debug for Projection<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Projection")
            .field("settings", &self.shared.settings)
            .field("mode", &self.mode)
            .field("positions", &self.partitions.iter().map(|(p, s)| (p, s.position)).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Projection<H> {
    /// A projection in the consumer group named by `settings.consumer`'s `group.id`,
    /// subscribed to the topic. Positions are read when partitions are assigned.
    pub fn subscribe(settings: Settings, pool: Pool, handler: H) -> Result<Self> {
        let consumer = Self::consumer(&settings, Mode::Group)?;
        consumer.subscribe(&[&settings.topic])?;
        Self::with(settings, pool, handler, Mode::Group, consumer, BTreeMap::new())
    }

    /// A projection of every partition of the topic, without a consumer group, starting
    /// at the stored positions (the first offset where none is stored).
    pub async fn assign_all(settings: Settings, pool: Pool, handler: H) -> Result<Self> {
        let starts = partitions_and_starts(&settings).await?;
        let positions = Positions { projection: settings.name.clone(), topic: settings.topic.clone() };
        let stored = positions.load(&pool.get().await?).await?;
        let consumer = Self::consumer(&settings, Mode::All)?;
        let mut assignment = TopicPartitionList::new();
        let mut states = BTreeMap::new();
        for (partition, low) in starts {
            let position = stored.get(&partition).copied();
            let offset = Offset::Offset(position.unwrap_or(low));
            assignment.add_partition_offset(&settings.topic, partition, offset)?;
            states.insert(partition, PartitionState::new(position, None, 0));
        }
        consumer.assign(&assignment)?;
        drop(assignment);
        Self::with(settings, pool, handler, Mode::All, consumer, states)
    }

    fn consumer(settings: &Settings, mode: Mode) -> Result<Arc<StreamConsumer<Context>>> {
        let mut config = consumer_config(&settings.consumer);
        if mode == Mode::All {
            config.set("enable.partition.eof", "true");
            if config.get("group.id").is_none() {
                config.set("group.id", format!("{}-assigned", settings.name));
            }
        }
        let context = Context {
            topic: settings.topic.clone(),
            changes: Mutex::new(Vec::new()),
            ends: Mutex::new(HashMap::new()),
        };
        Ok(Arc::new(config.create_with_context(context)?))
    }

    fn with(
        settings: Settings,
        pool: Pool,
        handler: H,
        mode: Mode,
        consumer: Arc<StreamConsumer<Context>>,
        partitions: BTreeMap<i32, PartitionState>,
    ) -> Result<Self> {
        let dead_letters = DeadLetters::new(&settings)?;
        let positions = Positions { projection: settings.name.clone(), topic: settings.topic.clone() };
        let meters = Meters::new(&settings.name);
        let max_in_flight = pool.status().max_size.max(1);
        Ok(Self {
            shared: Arc::new(Shared { handler, pool, positions, settings, dead_letters, meters }),
            mode,
            consumer,
            partitions,
            reload: BTreeSet::new(),
            busy: BTreeSet::new(),
            tasks: HashMap::new(),
            max_in_flight,
            generation: 0,
            observer: None,
            rates: Rates::new(),
        })
    }

    /// Calls `observer` after every committed partition batch (for read-your-writes
    /// notifications, benchmarks...). It runs on the loop: keep it short.
    pub fn on_commit(&mut self, observer: impl Fn(&Committed<'_>) + Send + Sync + 'static) {
        self.observer = Some(Arc::new(observer));
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.shared.handler
    }

    /// The committed position of every assigned partition (`None`: nothing applied yet).
    pub fn positions(&self) -> BTreeMap<i32, Option<i64>> {
        self.partitions.iter().map(|(p, s)| (*p, s.committed)).collect()
    }

    /// Projects until `token` is cancelled, then leaves the group.
    pub async fn run(mut self, token: CancellationToken) -> Result<()> {
        let name = self.shared.settings.name.clone();
        info!(projection = %name, topic = %self.shared.settings.topic, "projection started");
        self.run_until(Until::Cancelled, &token).await?;
        if self.mode == Mode::Group {
            self.consumer.unsubscribe();
        }
        info!(projection = %name, "projection stopped");
        Ok(())
    }

    /// Projects until every partition is at its end ([`Projection::assign_all`] only).
    /// Returns `false` when `token` was cancelled first.
    pub async fn run_to_end(&mut self, token: &CancellationToken) -> Result<bool> {
        if self.mode != Mode::All {
            return Err(Error::NeedsAssignAll("run_to_end"));
        }
        self.run_until(Until::End, token).await
    }

    /// Projects until every partition in `targets` has reached its target position,
    /// applying no record at or past it ([`Projection::assign_all`] only). Returns
    /// `false` when `token` was cancelled first.
    pub async fn run_to(&mut self, targets: &BTreeMap<i32, i64>, token: &CancellationToken) -> Result<bool> {
        if self.mode != Mode::All {
            return Err(Error::NeedsAssignAll("run_to"));
        }
        self.run_until(Until::Targets(targets), token).await
    }

    /// The loop; see the [module docs](self). Returns whether `until` was reached
    /// (`false`: cancelled). Every batch launched has finished when it returns.
    async fn run_until(&mut self, until: Until<'_>, token: &CancellationToken) -> Result<bool> {
        let limit = match until {
            Until::Targets(targets) => Some(targets),
            _ => None,
        };
        let mut in_flight: FuturesUnordered<tokio::task::JoinHandle<Finished>> = FuturesUnordered::new();
        let mut polled: Vec<std::result::Result<Record, KafkaError>> = Vec::new();
        let mut seeking: Option<JoinHandle<Seeks>> = None;
        let reached = loop {
            if !self.handle_changes(token).await? {
                break false;
            }
            self.start_seeks(&mut seeking);
            self.launch(&mut in_flight, token);
            if in_flight.is_empty() && seeking.is_none() && self.done(until) {
                break true;
            }
            let waiting: usize = self.partitions.values().map(|s| s.pending.len()).sum();
            // No poll while seeks run: a record the fetcher reads after a seek lands, but
            // polled before the loop learns the seek is done, would be dropped and not
            // read again.
            let may_poll =
                seeking.is_none() && waiting < (self.max_in_flight + 1) * self.shared.settings.max_batch;
            tokio::select! {
                biased;
                () = token.cancelled() => break false,
                Some(finished) = in_flight.next(), if !in_flight.is_empty() => self.finish(finished),
                seeks = sought(&mut seeking), if seeking.is_some() => {
                    seeking = None;
                    self.sought(seeks);
                }
                () = poll(&self.consumer, &mut polled, &self.shared.settings), if may_poll => {}
            }
            for received in polled.drain(..) {
                self.take(received, limit);
            }
            self.refresh_lag();
        };
        // Let what was launched finish (or give up, shutdown cancelled its retries).
        while let Some(finished) = in_flight.next().await {
            self.finish(finished);
        }
        if seeking.is_some() {
            let seeks = sought(&mut seeking).await;
            self.sought(seeks);
        }
        for received in polled.drain(..) {
            self.take(received, limit);
        }
        if !reached {
            // Polled but not applied: the next run starts from the positions.
            let waiting: Vec<i32> =
                self.partitions.iter().filter(|(_, s)| !s.pending.is_empty()).map(|(p, _)| *p).collect();
            self.rewind(waiting);
        }
        self.refresh_lag();
        Ok(reached)
    }

    /// Whether the run is over (with no batch in flight).
    fn done(&self, until: Until<'_>) -> bool {
        let settled = self.reload.is_empty() && self.partitions.values().all(|s| s.pending.is_empty());
        match until {
            Until::Cancelled => false,
            Until::End => settled && self.partitions.values().all(|s| s.eof && s.seek.is_none()),
            Until::Targets(targets) => {
                settled
                    && targets.iter().all(|(partition, target)| {
                        self.partitions.get(partition).and_then(|s| s.committed).is_some_and(|p| p >= *target)
                    })
            }
        }
    }

    /// Files one polled record under its partition (or drops it).
    fn take(
        &mut self,
        received: std::result::Result<Record, KafkaError>,
        limit: Option<&BTreeMap<i32, i64>>,
    ) {
        let record = match received {
            Ok(record) => record,
            Err(KafkaError::PartitionEOF(partition)) => {
                // Every record before the end was polled already.
                if let Some(state) = self.partitions.get_mut(&partition) {
                    state.eof = true;
                }
                return;
            }
            Err(e) => {
                warn!(projection = %self.shared.settings.name, error = %e, "consuming failed");
                return;
            }
        };
        let target = limit.map(|l| l.get(&record.partition).copied());
        if let Some(state) = self.partitions.get_mut(&record.partition) {
            state.file(record, target);
        } // else: not (or no longer) assigned
    }

    /// Launches a batch for each partition with records waiting and none in flight,
    /// oldest waiting first, up to the concurrency limit.
    fn launch(
        &mut self,
        in_flight: &mut FuturesUnordered<tokio::task::JoinHandle<Finished>>,
        token: &CancellationToken,
    ) {
        if token.is_cancelled() {
            return;
        }
        let mut ready: Vec<(Instant, i32)> = self
            .partitions
            .iter()
            .filter(|(p, s)| !s.pending.is_empty() && !self.busy.contains(p))
            .filter_map(|(p, s)| s.pending_since.map(|since| (since, *p)))
            .collect();
        ready.sort_unstable();
        for (_, partition) in ready {
            if in_flight.len() >= self.max_in_flight {
                break;
            }
            let Some(state) = self.partitions.get_mut(&partition) else { continue };
            let take = state.pending.len().min(self.shared.settings.max_batch.max(1));
            let records: Vec<Record> = state.pending.drain(..take).collect();
            state.pending_since = if state.pending.is_empty() { None } else { Some(Instant::now()) };
            let expected = state.position;
            let Some(last) = records.last() else { continue };
            // The next batch of this partition expects the position this one commits.
            state.position = Some(last.offset + 1);
            let generation = state.generation;
            self.busy.insert(partition);
            let shared = Arc::clone(&self.shared);
            let token = token.clone();
            let task = tokio::spawn(async move {
                let applied = shared.apply_with_retry(partition, expected, &records, &token).await;
                (partition, generation, records, applied)
            });
            self.tasks.insert(task.id(), partition);
            in_flight.push(task);
        }
    }

    /// Records how a batch ended.
    fn finish(&mut self, finished: std::result::Result<Finished, tokio::task::JoinError>) {
        let (partition, generation, records, applied) = match finished {
            Ok(finished) => finished,
            Err(e) => {
                // The batch task panicked: a bug. Its partition starts over from the
                // stored position (its transaction was rolled back).
                error!(projection = %self.shared.settings.name, error = %e, "a batch task failed");
                if let Some(partition) = self.tasks.remove(&e.id()) {
                    self.busy.remove(&partition);
                    if self.partitions.contains_key(&partition) {
                        self.reload.insert(partition);
                    }
                }
                return;
            }
        };
        self.tasks.retain(|_, p| *p != partition);
        self.busy.remove(&partition);
        let count = records.len();
        let meters = self.shared.meters.clone();
        let current = self.partitions.get(&partition).is_some_and(|s| s.generation == generation);
        match applied {
            Applied::Committed { next_offset, latencies } => {
                if current && let Some(state) = self.partitions.get_mut(&partition) {
                    state.committed = Some(next_offset);
                }
                self.rates.applied(&meters, count);
                for latency in &latencies {
                    meters.latency.record(latency.as_secs_f64());
                }
                if let Some(observer) = &self.observer {
                    observer(&Committed {
                        partition,
                        next_offset,
                        records: count,
                        batch: &records,
                        latencies: &latencies,
                    });
                }
                if current && self.mode == Mode::Group {
                    // A hint for where the fetcher starts after a restart; positions in
                    // the database are what counts.
                    let mut offsets = TopicPartitionList::new();
                    let topic = &self.shared.settings.topic;
                    if offsets.add_partition_offset(topic, partition, Offset::Offset(next_offset)).is_ok()
                        && let Err(e) = self.consumer.commit(&offsets, CommitMode::Async)
                    {
                        debug!(error = %e, "committing the offset hint failed");
                    }
                }
            }
            Applied::Moved => {
                meters.conflicts.increment(1);
                if current {
                    info!(
                        projection = %self.shared.settings.name,
                        partition,
                        "the stored position was moved by another writer (rebalance or swapped read model); \
                         resuming from it"
                    );
                    self.reload.insert(partition);
                }
            }
            Applied::Interrupted => {
                if current {
                    self.reload.insert(partition);
                }
            }
        }
    }

    /// Refreshes the rate and lag gauges from the latest end offsets librdkafka reported.
    fn refresh_lag(&mut self) {
        self.rates.refresh(&self.shared.meters);
        let ends = self.consumer.context().ends.lock().unwrap_or_else(PoisonError::into_inner).clone();
        for (partition, state) in &self.partitions {
            let end = ends.get(partition).copied().unwrap_or(0).max(state.polled_end);
            let lag = (end - state.committed.unwrap_or(0)).max(0);
            self.rates.lag(&self.shared.settings.name, *partition, lag);
        }
    }
}

/// Polls up to `max_batch` records into `polled`, waiting at most `IDLE_POLL` for the
/// first and `max_wait` after it. Cancellation-safe: what was polled is in `polled`.
async fn poll(
    consumer: &StreamConsumer<Context>,
    polled: &mut Vec<std::result::Result<Record, KafkaError>>,
    settings: &Settings,
) {
    let Ok(first) = tokio::time::timeout(IDLE_POLL, consumer.recv()).await else { return };
    polled.push(first.map(|m| to_record(&m)));
    let deadline = tokio::time::Instant::now() + settings.max_wait;
    while polled.len() < settings.max_batch {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(received) => polled.push(received.map(|m| to_record(&m))),
            Err(_) => break,
        }
    }
}

/// An owned copy of a polled message.
fn to_record<M: Message>(message: &M) -> Record {
    let headers = message
        .headers()
        .map(|headers| {
            headers.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect::<Vec<_>>()
        })
        .unwrap_or_default();
    Record {
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        timestamp_ms: message.timestamp().to_millis(),
        headers,
    }
}
