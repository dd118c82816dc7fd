//! [`Projection`]: the consume loop. See the [crate docs](crate) for what it guarantees.
//!
//! One loop owns the consumer and the partitions' state; the transactions run as tasks
//! of their own, so that polling and applying overlap and several partitions apply at
//! once (librdkafka hands out records a partition at a time, so one poll rarely spans
//! many partitions). Each turn of the loop:
//!
//! 1. handles the assignment changes the rebalance callback queued (reading the stored
//!    positions of newly assigned partitions and scheduling a seek to them) and retries
//!    pending seeks;
//! 2. launches a batch for every partition that has records waiting and no batch in
//!    flight, oldest waiting first, while fewer than the pool's size are in flight;
//! 3. waits for a batch to finish (then records its position, metrics and the Kafka
//!    hint) or polls: up to `max_batch` records, at most `max_wait` after the first,
//!    each filed under its partition (or dropped: not assigned, before the position,
//!    waiting for a seek, past a target).
//!
//! At most one batch per partition is in flight: its records are applied in offset
//! order, and the next batch of the partition expects the position the previous one
//! committed. Polling pauses while `(in-flight limit + 1) * max_batch` records wait:
//! enough to read past one busy partition's records (librdkafka queues them in runs of
//! up to a fetch's worth) to the next partitions'.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use deadpool_postgres::Pool;
use futures::{StreamExt as _, stream::FuturesUnordered};
use metrics::{Counter, Gauge, Histogram};
use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, Statistics, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaError,
    message::{Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    types::RDKafkaErrorCode,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::{
    Batch, Error, Handler, Record, Result, next_delay,
    positions::{Claim, Positions},
};

/// How long a poll waits for a first record before the loop turns again (to retry
/// seeks, refresh lag and notice the end of partitions).
const IDLE_POLL: Duration = Duration::from_millis(200);

/// Settings of a [`Projection`].
#[derive(Clone)]
pub struct Settings {
    /// The projection's name: its key in the positions table and its `projection`
    /// metric label.
    pub name: String,
    /// The topic to project.
    pub topic: String,
    /// Where records the handler refuses go.
    pub dead_letter_topic: String,
    /// Most records in one partition batch (one transaction), and polled at once.
    pub max_batch: usize,
    /// Longest wait, after the first record of a poll, for more records.
    pub max_wait: Duration,
    /// Consumer configuration (with `group.id` when subscribing). Auto-commit is turned
    /// off whatever it says.
    pub consumer: ClientConfig,
    /// Producer configuration for the dead-letter topic.
    pub producer: ClientConfig,
}

impl fmt::Debug for Settings {
    /// Leaves out the client configurations, which may hold credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("name", &self.name)
            .field("topic", &self.topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("max_batch", &self.max_batch)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

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

/// How partitions are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A consumer group assigns them.
    Group,
    /// Every partition, without a group.
    All,
}

/// What the loop knows of one assigned partition.
#[derive(Debug, Clone)]
struct PartitionState {
    /// The position the next batch expects to find stored (`None`: nothing stored yet):
    /// with a batch in flight, the one that batch will commit.
    position: Option<i64>,
    /// The position last committed (or read at assignment).
    committed: Option<i64>,
    /// A seek still to be done; records are dropped until it is.
    seek: Option<Offset>,
    /// Whether the end of the partition was reached with nothing polled since.
    eof: bool,
    /// The offset after the last record polled: a floor for the partition's end between
    /// two statistics reports.
    polled_end: i64,
    /// Records polled and not yet in a batch, in offset order.
    pending: Vec<Record>,
    /// When the oldest pending record was polled.
    pending_since: Option<Instant>,
    /// Changes whenever the state is made anew (assignment, reload), so that the outcome
    /// of a batch launched for an older state is not taken for this one.
    generation: u64,
}

impl PartitionState {
    fn new(position: Option<i64>, seek: Option<Offset>, generation: u64) -> Self {
        Self {
            position,
            committed: position,
            seek,
            eof: false,
            polled_end: 0,
            pending: Vec::new(),
            pending_since: None,
            generation,
        }
    }
}

/// Assignment changes queued by the rebalance callback for the loop.
#[derive(Debug)]
enum Change {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// The consumer's context: queues assignment changes and keeps the partitions' end
/// offsets from librdkafka's statistics.
struct Context {
    topic: String,
    changes: Mutex<Vec<Change>>,
    ends: Mutex<HashMap<i32, i64>>,
}

impl ClientContext for Context {
    /// As librdkafka's default, except that reaching the end of a partition (reported
    /// when [`Projection::assign_all`] asks for it) is not an error.
    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {
                debug!(reason, "end of partition reached");
            }
            error => error!("librdkafka: {error}: {reason}"),
        }
    }

    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else { return };
        let mut ends = self.ends.lock().unwrap_or_else(PoisonError::into_inner);
        for (partition, stats) in &topic.partitions {
            // read_committed reads up to the last stable offset.
            let end = if stats.ls_offset >= 0 { stats.ls_offset } else { stats.hi_offset };
            if *partition >= 0 && end >= 0 {
                ends.insert(*partition, end);
            }
        }
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |tpl: &TopicPartitionList| -> Vec<i32> {
            tpl.elements().iter().filter(|e| e.topic() == self.topic).map(|e| e.partition()).collect()
        };
        let change = match rebalance {
            Rebalance::Assign(tpl) => Change::Assigned(partitions(tpl)),
            Rebalance::Revoke(tpl) => Change::Revoked(partitions(tpl)),
            Rebalance::Error(e) => {
                warn!(error = %e, "rebalance failed");
                return;
            }
        };
        debug!(?change, "assignment changed");
        self.changes.lock().unwrap_or_else(PoisonError::into_inner).push(change);
    }
}

/// Metric handles, registered once.
#[derive(Clone)]
struct Meters {
    applied: Counter,
    rate: Gauge,
    latency: Histogram,
    batch_size: Histogram,
    batch_duration: Histogram,
    dead_letters: Counter,
    conflicts: Counter,
    failures: Counter,
}

impl Meters {
    fn new(name: &str) -> Self {
        let labels = [("projection", name.to_string())];
        Self {
            applied: metrics::counter!("projection_events_applied_total", &labels),
            rate: metrics::gauge!("projection_events_applied_per_second", &labels),
            latency: metrics::histogram!("projection_apply_latency_seconds", &labels),
            batch_size: metrics::histogram!("projection_batch_size", &labels),
            batch_duration: metrics::histogram!("projection_batch_duration_seconds", &labels),
            dead_letters: metrics::counter!("projection_dead_letters_total", &labels),
            conflicts: metrics::counter!("projection_position_conflicts_total", &labels),
            failures: metrics::counter!("projection_apply_failures_total", &labels),
        }
    }
}

/// The applied-per-second gauge, over the last 10 s, and the lag gauges.
struct Rates {
    window: VecDeque<(Instant, usize)>,
    started: Instant,
    lag: HashMap<i32, Gauge>,
}

impl Rates {
    fn applied(&mut self, meters: &Meters, n: usize) {
        meters.applied.increment(n as u64);
        self.window.push_back((Instant::now(), n));
        self.refresh(meters);
    }

    fn refresh(&mut self, meters: &Meters) {
        let now = Instant::now();
        let span = Duration::from_secs(10);
        while self.window.front().is_some_and(|(at, _)| now.duration_since(*at) > span) {
            self.window.pop_front();
        }
        let seconds = now.duration_since(self.started).min(span).as_secs_f64().max(1.0);
        let total: usize = self.window.iter().map(|(_, n)| n).sum();
        meters.rate.set(total as f64 / seconds);
    }
}

/// What the batch tasks share with the loop.
struct Shared<H> {
    handler: H,
    pool: Pool,
    positions: Positions,
    settings: Settings,
    producer: FutureProducer,
    meters: Meters,
}

/// A batch in flight: its partition and state generation, its records, how it ended.
type Finished = (i32, u64, Vec<Record>, Applied);

/// A projection of one topic into PostgreSQL through a [`Handler`]. See the
/// [crate docs](crate).
pub struct Projection<H> {
    shared: Arc<Shared<H>>,
    mode: Mode,
    consumer: StreamConsumer<Context>,
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

/// How applying one partition batch ended.
enum Applied {
    Committed { next_offset: i64, latencies: Vec<Duration> },
    Moved,
    Interrupted,
}

/// When a run stops.
#[derive(Debug, Clone, Copy)]
enum Until<'a> {
    /// When the token is cancelled.
    Cancelled,
    /// When every partition is at its end.
    End,
    /// When every partition reached its target.
    Targets(&'a BTreeMap<i32, i64>),
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

    fn consumer(settings: &Settings, mode: Mode) -> Result<StreamConsumer<Context>> {
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
        Ok(config.create_with_context(context)?)
    }

    fn with(
        settings: Settings,
        pool: Pool,
        handler: H,
        mode: Mode,
        consumer: StreamConsumer<Context>,
        partitions: BTreeMap<i32, PartitionState>,
    ) -> Result<Self> {
        let producer: FutureProducer = settings.producer.create()?;
        let positions = Positions { projection: settings.name.clone(), topic: settings.topic.clone() };
        let meters = Meters::new(&settings.name);
        let max_in_flight = pool.status().max_size.max(1);
        Ok(Self {
            shared: Arc::new(Shared { handler, pool, positions, settings, producer, meters }),
            mode,
            consumer,
            partitions,
            reload: BTreeSet::new(),
            busy: BTreeSet::new(),
            tasks: HashMap::new(),
            max_in_flight,
            generation: 0,
            observer: None,
            rates: Rates { window: VecDeque::new(), started: Instant::now(), lag: HashMap::new() },
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
            return Err(Error::Usage("run_to_end needs a projection made by assign_all"));
        }
        self.run_until(Until::End, token).await
    }

    /// Projects until every partition in `targets` has reached its target position,
    /// applying no record at or past it ([`Projection::assign_all`] only). Returns
    /// `false` when `token` was cancelled first.
    pub async fn run_to(&mut self, targets: &BTreeMap<i32, i64>, token: &CancellationToken) -> Result<bool> {
        if self.mode != Mode::All {
            return Err(Error::Usage("run_to needs a projection made by assign_all"));
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
        let reached = loop {
            if !self.handle_changes(token).await? {
                break false;
            }
            self.retry_seeks();
            self.launch(&mut in_flight, token);
            if in_flight.is_empty() && self.done(until) {
                break true;
            }
            let waiting: usize = self.partitions.values().map(|s| s.pending.len()).sum();
            let may_poll = waiting < (self.max_in_flight + 1) * self.shared.settings.max_batch;
            tokio::select! {
                biased;
                () = token.cancelled() => break false,
                Some(finished) = in_flight.next(), if !in_flight.is_empty() => self.finish(finished),
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
        let Some(state) = self.partitions.get_mut(&record.partition) else {
            return; // not (or no longer) assigned
        };
        state.eof = false;
        state.polled_end = state.polled_end.max(record.offset + 1);
        let next = state.pending.last().map(|r| r.offset + 1).or(state.position);
        if state.seek.is_some() || next.is_some_and(|n| record.offset < n) {
            return; // before the position, or the fetcher is about to move
        }
        if limit.is_some_and(|l| l.get(&record.partition).is_none_or(|t| record.offset >= *t)) {
            // Past the target: not applied now, so the fetcher goes back to where the
            // next run must start.
            state.seek = Some(next.map_or(Offset::Beginning, Offset::Offset));
            return;
        }
        state.pending_since.get_or_insert_with(Instant::now);
        state.pending.push(record);
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

    /// Applies the queued assignment changes and reloads: forgets revoked partitions,
    /// reads the stored positions of (re)assigned ones and schedules a seek to them.
    /// Returns `false` when shutdown interrupted it.
    async fn handle_changes(&mut self, token: &CancellationToken) -> Result<bool> {
        let changes = std::mem::take(
            &mut *self.consumer.context().changes.lock().unwrap_or_else(PoisonError::into_inner),
        );
        for change in changes {
            match change {
                Change::Assigned(partitions) => self.reload.extend(partitions),
                Change::Revoked(partitions) => {
                    for partition in partitions {
                        self.partitions.remove(&partition);
                        self.reload.remove(&partition);
                        if let Some(gauge) = self.rates.lag.remove(&partition) {
                            gauge.set(0.0);
                        }
                    }
                }
            }
        }
        // A partition with a batch in flight is reloaded once the batch has finished.
        let due: Vec<i32> = self.reload.iter().copied().filter(|p| !self.busy.contains(p)).collect();
        if due.is_empty() {
            return Ok(true);
        }
        let mut delay = Duration::from_millis(100);
        let stored = loop {
            match self.load_positions().await {
                Ok(stored) => break stored,
                Err(e) => warn!(error = %e, retry_in = ?delay, "reading stored positions failed; retrying"),
            }
            tokio::select! {
                () = token.cancelled() => return Ok(false),
                () = tokio::time::sleep(delay) => {}
            }
            delay = next_delay(delay);
        };
        for partition in due {
            self.reload.remove(&partition);
            let position = stored.get(&partition).copied();
            let seek = Some(position.map_or(Offset::Beginning, Offset::Offset));
            info!(projection = %self.shared.settings.name, partition, ?position, "partition assigned; seeking to its stored position");
            self.generation += 1;
            self.partitions.insert(partition, PartitionState::new(position, seek, self.generation));
        }
        self.retry_seeks();
        Ok(true)
    }

    /// Records of `partitions` were polled but will not be applied: drop them, and send
    /// the fetcher back to the positions before the next batch.
    fn rewind(&mut self, partitions: Vec<i32>) {
        for partition in partitions {
            if let Some(state) = self.partitions.get_mut(&partition) {
                state.pending.clear();
                state.pending_since = None;
                state.position = state.committed;
                state.seek = Some(state.committed.map_or(Offset::Beginning, Offset::Offset));
                state.eof = false;
            }
        }
    }

    async fn load_positions(&self) -> Result<BTreeMap<i32, i64>> {
        let client = self.shared.pool.get().await?;
        self.shared.positions.load(&client).await
    }

    /// Tries every pending seek once. librdkafka refuses to seek a partition whose
    /// fetcher has not started yet (just after assignment); those stay pending.
    fn retry_seeks(&mut self) {
        let topic = &self.shared.settings.topic;
        for (partition, state) in &mut self.partitions {
            let Some(offset) = state.seek else { continue };
            if self.busy.contains(partition) {
                continue; // its batch decides the position first
            }
            match self.consumer.seek(topic, *partition, offset, Duration::from_millis(500)) {
                Ok(()) => {
                    // Records still pending are before `offset`: they stay.
                    debug!(partition, ?offset, "seek done");
                    state.seek = None;
                    state.eof = false;
                }
                Err(e) => debug!(partition, ?offset, error = %e, "seek not possible yet; retrying"),
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
            let name = &self.shared.settings.name;
            self.rates
                .lag
                .entry(*partition)
                .or_insert_with(|| {
                    metrics::gauge!(
                        "projection_consumer_lag",
                        "projection" => name.clone(),
                        "partition" => partition.to_string()
                    )
                })
                .set(lag as f64);
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

impl<H: Handler> Shared<H> {
    /// Applies one partition batch, retrying with backoff until it commits, the
    /// position turns out moved, or shutdown begins.
    async fn apply_with_retry(
        &self,
        partition: i32,
        expected: Option<i64>,
        records: &[Record],
        token: &CancellationToken,
    ) -> Applied {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            match self.apply_once(partition, expected, records).await {
                Ok(Some(next_offset)) => {
                    let now_ms = now_millis();
                    self.meters.batch_size.record(records.len() as f64);
                    self.meters.batch_duration.record(started.elapsed().as_secs_f64());
                    let latencies = records
                        .iter()
                        .filter_map(|r| r.timestamp_ms)
                        .map(|ts| Duration::from_millis(u64::try_from(now_ms - ts).unwrap_or(0)))
                        .collect();
                    return Applied::Committed { next_offset, latencies };
                }
                Ok(None) => return Applied::Moved,
                Err(e) => {
                    attempt += 1;
                    self.meters.failures.increment(1);
                    let name = &self.settings.name;
                    if attempt >= 5 {
                        error!(projection = %name, partition, attempt, error = %e, retry_in = ?delay, "applying a batch keeps failing; retrying");
                    } else {
                        warn!(projection = %name, partition, attempt, error = %e, retry_in = ?delay, "applying a batch failed; retrying");
                    }
                }
            }
            tokio::select! {
                () = token.cancelled() => return Applied::Interrupted,
                () = tokio::time::sleep(delay) => {}
            }
            delay = next_delay(delay);
        }
    }

    /// One attempt: claim the position, apply, dead-letter, advance, commit. `None`
    /// when another writer moved the position.
    async fn apply_once(
        &self,
        partition: i32,
        expected: Option<i64>,
        records: &[Record],
    ) -> Result<Option<i64>> {
        let Some(last) = records.last() else { return Ok(expected) };
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Claim::Held { exists } = self.positions.claim(&tx, partition, expected).await? else {
            return Ok(None);
        };
        let batch = Batch { topic: &self.settings.topic, partition, records };
        let outcome = self.handler.apply(&tx, &batch).await.map_err(|e| Error::Handler(Box::new(e)))?;
        for dead in &outcome.dead_letters {
            if let Some(record) = records.get(dead.index) {
                self.dead_letter(record, &dead.reason).await?;
            }
        }
        let next_offset = last.offset + 1;
        if let Claim::Moved = self.positions.advance(&tx, partition, exists, next_offset).await? {
            return Ok(None);
        }
        tx.commit().await?;
        if !outcome.dead_letters.is_empty() {
            self.meters.dead_letters.increment(outcome.dead_letters.len() as u64);
        }
        Ok(Some(next_offset))
    }

    /// Produces `record` to the dead-letter topic: its key, value and headers, plus
    /// `dlq.reason`, `dlq.origin.topic`, `dlq.origin.partition`, `dlq.origin.offset` and
    /// `dlq.projection`.
    async fn dead_letter(&self, record: &Record, reason: &str) -> Result<()> {
        warn!(
            projection = %self.settings.name,
            partition = record.partition,
            offset = record.offset,
            reason,
            "dead-lettering a record"
        );
        let partition = record.partition.to_string();
        let offset = record.offset.to_string();
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len() + 5);
        for (key, value) in &record.headers {
            headers = headers.insert(Header { key, value: value.as_deref() });
        }
        let headers = headers
            .insert(Header { key: "dlq.reason", value: Some(reason) })
            .insert(Header { key: "dlq.origin.topic", value: Some(self.settings.topic.as_str()) })
            .insert(Header { key: "dlq.origin.partition", value: Some(partition.as_str()) })
            .insert(Header { key: "dlq.origin.offset", value: Some(offset.as_str()) })
            .insert(Header { key: "dlq.projection", value: Some(self.settings.name.as_str()) });
        let mut out: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.settings.dead_letter_topic).headers(headers);
        if let Some(key) = &record.key {
            out = out.key(key.as_slice());
        }
        if let Some(payload) = &record.payload {
            out = out.payload(payload.as_slice());
        }
        self.producer.send(out, Duration::from_secs(10)).await.map_err(|(e, _)| Error::Kafka(e))?;
        Ok(())
    }
}

/// The partitions of `topic`, from the brokers' metadata (a client made from `config`).
/// [`Error::UnknownTopic`] when it does not exist or has none.
pub async fn topic_partitions(config: &ClientConfig, topic: &str) -> Result<Vec<i32>> {
    let (config, topic) = (config.clone(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = config.create()?;
        partitions_of(&client, &topic)
    })
    .await
    .map_err(|_| Error::Usage("reading the topic's metadata panicked"))?
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

/// The partitions of the topic (from the brokers' metadata) and the low watermark of
/// each: where a partition without a stored position starts. An explicit offset, because
/// librdkafka resolves `Offset::Beginning` with a lookup that costs about half a second.
async fn partitions_and_starts(settings: &Settings) -> Result<BTreeMap<i32, i64>> {
    let config = settings.consumer.clone();
    let topic = settings.topic.clone();
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = config.create()?;
        let timeout = Duration::from_secs(10);
        partitions_of(&client, &topic)?
            .into_iter()
            .map(|partition| Ok((partition, client.fetch_watermarks(&topic, partition, timeout)?.0)))
            .collect()
    })
    .await
    .map_err(|_| Error::Usage("reading the topic's metadata panicked"))?
}

/// `base` with the settings a projection's consumer runs with: auto-commit off,
/// statistics every 2 s (for the lag gauges) and, unless `base` says otherwise,
/// `fetch.queue.backoff.ms=10`. librdkafka's default (1 s) stops fetching a partition for
/// a whole second whenever its local queue is full, which starves a consumer that
/// empties the queue faster than that.
pub fn consumer_config(base: &ClientConfig) -> ClientConfig {
    let mut config = base.clone();
    config.set("enable.auto.commit", "false");
    for (key, value) in [("statistics.interval.ms", "2000"), ("fetch.queue.backoff.ms", "10")] {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    config
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

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
