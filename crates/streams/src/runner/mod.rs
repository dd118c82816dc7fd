//! Runs a [`Topology`] on Kafka, exactly once: each poll-process-commit cycle is one
//! Kafka transaction holding the outputs, the changelog records of the state stores
//! and the input offsets (`send_offsets_to_transaction`), as Kafka Streams' exactly-once
//! v2 does. [`Guarantee::AtLeastOnce`] runs the same cycle without transactions (flush,
//! then commit the offsets), as Kafka Streams' `at_least_once`: what exactly once costs
//! is the difference.
//!
//! The loop runs on a thread of its own: librdkafka's transactional calls block, and
//! so do the restores. One consumer (a group member, `read_committed`,
//! cooperative-sticky) reads every input topic; one transactional producer writes.
//! A task is one input partition: its state is built by [`Topology::new_task`] and
//! restored from partition *p* of the input's changelog topic before any of its
//! records is processed, on start and on every assignment (inside the assignment
//! callback, so no record of the partition is seen first). On revocation the open
//! transaction is committed inside the revoke callback, before the partitions go. On
//! an abortable error the transaction is aborted, every task is rebuilt from its
//! changelog and the consumer sought back to the committed offsets; a fatal one (a
//! fenced producer: another instance took the transactional id) recreates the producer
//! and the consumer, which resume from the committed offsets (see [`run`]).

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig, ClientContext,
    consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance},
    error::KafkaError,
    message::BorrowedHeaders,
    producer::{Producer as _, ThreadedProducer},
};
use tracing::{debug, info, warn};

use self::engine::{Deliveries, Engine, TaskId, lock};

mod engine;

/// How long a transactional call may block.
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many producer restarts within [`RESTART_WINDOW`]; one more ends the run.
const MAX_RESTARTS: usize = 4;
/// See [`MAX_RESTARTS`].
const RESTART_WINDOW: Duration = Duration::from_secs(600);

/// Errors of a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A Kafka call failed for good.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A changelog record could not be restored.
    #[error("restoring {topic}/{partition}: {reason}")]
    Restore {
        /// The changelog topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Why.
        reason: String,
    },
    /// The settings do not make a topology that can run.
    #[error("invalid settings: {0}")]
    Settings(String),
    /// A Kafka call failed for a reason of the group or the transaction moving on, or of
    /// the brokers being away for longer than its timeout (see `in_rebalance`): a
    /// commit (the periodic one, or the one before partitions are revoked), or reading
    /// the changelogs of the partitions assigned.
    /// [`run`] rejoins with a new producer and consumer and resumes from the committed
    /// offsets, as Kafka Streams does after a `TaskMigratedException`: exactly once, the
    /// open transaction is aborted and nothing is lost or counted twice; at least once,
    /// the records since the last commit are processed again.
    #[error("rebalancing: {0}")]
    Rebalance(KafkaError),
    /// The producer hit a fatal error (most often fenced: an instance with the same
    /// transactional id started). [`run`] recreates it and resumes from the committed
    /// offsets; this is what the restart it backs off from was.
    #[error("the producer failed for good ({code:?}): {reason}")]
    ProducerFatal {
        /// librdkafka's code (`Fenced`, `ProducerFenced`, ...).
        code: rdkafka::types::RDKafkaErrorCode,
        /// Its description.
        reason: String,
    },
}

/// An input record, as the topology sees it.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its partition: the task's.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its value.
    pub value: Option<&'a [u8]>,
    /// Its headers (for a dead letter that carries them on, say).
    pub headers: Option<&'a BorrowedHeaders>,
}

impl std::fmt::Debug for Input<'_> {
    /// Where it comes from and how big it is (not its bytes).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use rdkafka::message::Headers as _;
        f.debug_struct("Input")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("key_len", &self.key.map(<[u8]>::len))
            .field("value_len", &self.value.map(<[u8]>::len))
            .field("headers", &self.headers.map_or(0, |h| h.count()))
            .finish()
    }
}

impl Input<'_> {
    /// Its headers in the form of [`Output::headers`] (a header without value as an
    /// empty one): to carry them on, to a dead-letter topic say.
    pub fn owned_headers(&self) -> Vec<(String, Vec<u8>)> {
        use rdkafka::message::Headers as _;
        self.headers.map_or_else(Vec::new, |headers| {
            headers.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect()
        })
    }
}

/// A record to produce in the current transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The topic.
    pub topic: String,
    /// Its key (the partitioner picks the partition from it).
    pub key: Vec<u8>,
    /// Its value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// Its headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// A changelog record of a task's state: key and value, `None` for a deletion.
pub type ChangelogRecord = (Vec<u8>, Option<Vec<u8>>);

/// What to run: a task per input partition, and what a task does.
pub trait Topology: Send + 'static {
    /// The state of one task.
    type Task: Send;

    /// A new, empty task for `partition` of `topic`.
    fn new_task(&self, topic: &str, partition: i32) -> Self::Task;

    /// Applies one record of the task's changelog while restoring.
    ///
    /// # Errors
    /// When the record cannot be read: the run ends (a changelog is never skipped).
    fn restore(&self, task: &mut Self::Task, key: &[u8], value: Option<&[u8]>) -> Result<(), String>;

    /// Processes one input record, pushing what to produce onto `out`.
    fn process(&self, task: &mut Self::Task, record: Input<'_>, out: &mut Vec<Output>);

    /// Called before each commit with the processing time: rate-limited updates, windows
    /// closed, by stream time or by wall clock.
    fn punctuate(&self, task: &mut Self::Task, now_ms: i64, out: &mut Vec<Output>);

    /// The task's changelog records since the last call.
    fn changelog(&self, task: &mut Self::Task) -> Vec<ChangelogRecord>;
}

/// What a run guarantees when it crashes or loses a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Guarantee {
    /// The outputs, the changelog records and the input offsets of a cycle commit together
    /// in one Kafka transaction: a crash neither loses nor repeats an effect, for readers
    /// with `read_committed` (Kafka Streams' `exactly_once_v2`).
    #[default]
    ExactlyOnce,
    /// The outputs and changelog records of a cycle are flushed, then its input offsets
    /// committed: nothing is lost, but a crash between the two processes the records
    /// since the last commit again, outputs and state changes included (Kafka Streams'
    /// `at_least_once`). No transactions: the baseline that shows what exactly once
    /// costs. Not for stores whose changelog says what was emitted: the outputs and the
    /// changelog records of a cycle are flushed together, so an output the broker refuses
    /// while it takes the changelog record is not emitted again after the restart.
    AtLeastOnce,
}

/// How to run a topology.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The application id: the consumer group.
    pub application_id: String,
    /// The producer's transactional id: stable per instance (a restarted instance with
    /// the same id aborts its predecessor's open transaction at once), unique across
    /// instances.
    pub transactional_id: String,
    /// Each input topic with the changelog topic of its tasks' state (same partition
    /// count: partition *p* of the changelog holds the state of the task of input
    /// partition *p*).
    pub inputs: Vec<(String, String)>,
    /// librdkafka settings (bootstrap servers, security); the runner sets those its
    /// guarantees need.
    pub config: ClientConfig,
    /// How often a transaction commits (Kafka Streams under exactly once: 100 ms). Readers
    /// with `read_committed` see the outputs at most this much later.
    pub commit_interval: Duration,
    /// At most this many input records per transaction.
    pub max_records_per_transaction: usize,
    /// Exactly once (the default) or at least once.
    pub guarantee: Guarantee,
}

impl Settings {
    /// Settings for `application_id`, one instance `transactional_id`, `inputs` with their
    /// changelogs, on `config`; commits every 100 ms or 10,000 records.
    pub fn new(
        application_id: impl Into<String>,
        transactional_id: impl Into<String>,
        inputs: &[(&str, &str)],
        config: ClientConfig,
    ) -> Self {
        Self {
            application_id: application_id.into(),
            transactional_id: transactional_id.into(),
            inputs: inputs.iter().map(|(i, c)| ((*i).to_string(), (*c).to_string())).collect(),
            config,
            commit_interval: Duration::from_millis(100),
            max_records_per_transaction: 10_000,
            guarantee: Guarantee::ExactlyOnce,
        }
    }
}

/// The handle of a run: stops it, and tells whether it is restoring state (for a
/// readiness probe: a replica restoring its tasks is not caught up).
#[derive(Debug, Clone, Default)]
pub struct Stop {
    stop: Arc<AtomicBool>,
    halt: Arc<AtomicBool>,
    restoring: Arc<AtomicUsize>,
}

impl Stop {
    /// A fresh one.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops after committing the open transaction.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Stops at once, committing nothing, as a crash would (for tests of recovery).
    pub fn halt(&self) {
        self.halt.store(true, Ordering::SeqCst);
    }

    /// How many tasks are waiting for their restore or being restored right now (their
    /// partitions were just assigned, or an aborted transaction is being recovered); a
    /// run that has not been given its first assignment yet counts as one.
    pub fn tasks_restoring(&self) -> usize {
        self.restoring.load(Ordering::SeqCst)
    }

    /// A guard that stops the run when dropped: hold it in the async task that waits
    /// for the run's thread, so that the thread also ends when that task is dropped
    /// unfinished (a runtime shut down by a panic waits for its blocking threads).
    pub fn on_drop(&self) -> StopOnDrop {
        StopOnDrop(self.clone())
    }
}

/// Stops a run when dropped; see [`Stop::on_drop`].
#[derive(Debug)]
pub struct StopOnDrop(Stop);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

struct Context<T: Topology> {
    engine: Arc<Mutex<Engine<T>>>,
}

/// `consumer_lag_records{topic, partition}`: records of each assigned input partition
/// not read yet (from librdkafka's statistics, every 5 s), as the other consumers of the
/// platform report it. From the stored offset, which advances as records are polled:
/// the committed one does not move here (exactly once commits through the producer).
/// Only partitions being fetched: the statistics list the others with stale offsets.
const LAG: &str = "consumer_lag_records";
/// `consumer_rebalances_total{kind}`: partitions assigned to or revoked from this member.
const REBALANCES: &str = "consumer_rebalances_total";

impl<T: Topology> ClientContext for Context<T> {
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, stats) in &statistics.topics {
            for (partition, p) in &stats.partitions {
                if *partition >= 0 && p.fetch_state == "active" && p.consumer_lag_stored >= 0 {
                    metrics::gauge!(LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                        .set(p.consumer_lag_stored as f64);
                }
            }
        }
    }
}

impl<T: Topology> ConsumerContext for Context<T> {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else { return };
        let mut engine = lock(&self.engine);
        if engine.failed.is_some() || engine.halted {
            return;
        }
        if let Err(error) = engine.commit(consumer) {
            warn!(%error, "committing before a revocation failed");
            engine.failed = Some(in_rebalance(error));
            return;
        }
        for element in list.elements() {
            engine.tasks.remove(&(element.topic().to_string(), element.partition()));
            // The next owner reports its lag.
            metrics::gauge!(LAG, "topic" => element.topic().to_string(), "partition" => element.partition().to_string())
                .set(0.0);
        }
        metrics::counter!(REBALANCES, "kind" => "revoked").increment(1);
        info!(partitions = list.count(), "partitions revoked after the commit");
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(list) = rebalance else { return };
        let mut engine = lock(&self.engine);
        if engine.failed.is_some() {
            return;
        }
        let ids: Vec<TaskId> =
            list.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        if !ids.is_empty() {
            metrics::counter!(REBALANCES, "kind" => "assigned").increment(1);
        }
        if let Err(error) = engine.restore_all(&ids) {
            warn!(%error, "restoring the assigned tasks failed");
            engine.failed = Some(match error {
                RunError::Kafka(error) => in_rebalance(error),
                other => other,
            });
        }
        engine.assigned();
    }
}

/// A Kafka error met in a rebalance callback or a commit: [`RunError::Rebalance`] (the run rejoins)
/// when it comes from the group or the transaction moving on (a retriable or abortable
/// transaction error, a generation or member the coordinator no longer knows, a
/// rebalance in progress, a coordinator away or a timeout); anything else (a refused
/// delivery, a changelog that does not exist) ends the run as [`RunError::Kafka`].
fn in_rebalance(error: KafkaError) -> RunError {
    use rdkafka::types::RDKafkaErrorCode as C;
    let churn = match &error {
        KafkaError::Transaction(e) => e.is_retriable() || e.txn_requires_abort(),
        other => matches!(
            other.rdkafka_error_code(),
            Some(
                C::RebalanceInProgress
                    | C::IllegalGeneration
                    | C::UnknownMemberId
                    | C::FencedInstanceId
                    | C::OperationTimedOut
                    | C::RequestTimedOut
                    | C::CoordinatorNotAvailable
                    | C::NotCoordinator
                    | C::CoordinatorLoadInProgress
                    | C::NotLeaderForPartition
                    | C::LeaderNotAvailable
            )
        ),
    };
    if churn { RunError::Rebalance(error) } else { RunError::Kafka(error) }
}

/// Initialises the transactional producer, a second at a time so that a stop is heard
/// while the brokers are unreachable; `false` when stopped first.
fn init_transactions(producer: &ThreadedProducer<Deliveries>, stop: &Stop) -> Result<bool, KafkaError> {
    loop {
        if stop.stop.load(Ordering::SeqCst) || stop.halt.load(Ordering::SeqCst) {
            return Ok(false);
        }
        match producer.init_transactions(Duration::from_secs(1)) {
            Ok(()) => return Ok(true),
            Err(KafkaError::Transaction(error)) if error.is_retriable() => {
                debug!(%error, "initialising the transactional producer; retrying");
            }
            Err(error) => return Err(error),
        }
    }
}

/// Runs `topology` until `stop` says so (or an error it cannot recover from).
///
/// # Errors
/// A Kafka error that neither aborting nor a new producer recovers from (an unreachable
/// broker past the timeouts, a refused delivery), or a changelog that cannot be
/// restored.
///
/// A producer that fails for good (fenced by an instance that took the same
/// transactional id, say), or a Kafka call that fails in a rebalance (the commit before
/// a revocation, the restore after an assignment) or a commit that times out (the brokers
/// away longer than the commit call waits, 30 s), is recreated with a new consumer, as Kafka Streams rejoins after a
/// `TaskMigratedException`: the open transaction is lost (the broker aborts it),
/// the tasks are restored and processing resumes from the committed offsets. The
/// restarts back off (1, 2, 4, 8 s) and count in `streams_producer_restarts_total`. A
/// fifth within ten minutes ends the run with the error: two live instances with one
/// transactional id would fence each other for ever, a configuration error to show, not
/// to hide. A stop during the backoff ends the run with the error too.
pub fn run<T: Topology>(topology: T, settings: &Settings, stop: &Stop) -> Result<(), RunError> {
    if settings.inputs.is_empty() {
        return Err(RunError::Settings("no input topic".into()));
    }
    let mut topology = topology;
    let mut restarts: Vec<Instant> = Vec::new();
    loop {
        let (outcome, returned) = run_once(topology, settings, stop);
        let (error, returned) = match (outcome, returned) {
            (Err(error @ (RunError::ProducerFatal { .. } | RunError::Rebalance(_))), Some(returned)) => {
                (error, returned)
            }
            (outcome, _) => return outcome,
        };
        // More than a few restarts within minutes: another live instance has the same
        // transactional id (INSTANCE_ID not unique), and the two would fence each other
        // for ever. End the run, so that the error shows.
        restarts.retain(|at| at.elapsed() < RESTART_WINDOW);
        if restarts.len() >= MAX_RESTARTS {
            match error {
                RunError::Rebalance(_) => {
                    warn!(%error, restarts = restarts.len(), "failing in rebalance after rebalance; the run ends");
                }
                _ => warn!(
                    %error,
                    restarts = restarts.len(),
                    "fenced again and again: is another instance running with the same transactional id?"
                ),
            }
            return Err(error);
        }
        let delay = Duration::from_secs(1 << restarts.len());
        restarts.push(Instant::now());
        warn!(%error, retry_in = ?delay, "recreating the producer and the consumer; resuming from the committed offsets");
        metrics::counter!("streams_producer_restarts_total").increment(1);
        let until = Instant::now() + delay;
        while Instant::now() < until {
            // A stop while rejoining after a rebalance is a clean stop: nothing was
            // committed past what was processed.
            if stop.stop.load(Ordering::SeqCst) && matches!(error, RunError::Rebalance(_)) {
                return Ok(());
            }
            if stop.stop.load(Ordering::SeqCst) || stop.halt.load(Ordering::SeqCst) {
                return Err(error);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        topology = returned;
    }
}

/// One life of the producer and the consumer: the outcome, and the topology back (to run
/// again after a fatal producer error), unless it was lost to a panic.
fn run_once<T: Topology>(topology: T, settings: &Settings, stop: &Stop) -> (Result<(), RunError>, Option<T>) {
    // Not ready until the first assignment is restored (the engine takes this over).
    stop.restoring.fetch_add(1, Ordering::SeqCst);
    let (producer, restorer) = match clients(settings, stop) {
        Ok(Some(clients)) => clients,
        Ok(None) => {
            stop.restoring.fetch_sub(1, Ordering::SeqCst);
            info!("stopped before the producer was initialised");
            return (Ok(()), Some(topology));
        }
        Err(error) => {
            stop.restoring.fetch_sub(1, Ordering::SeqCst);
            return (Err(error), Some(topology));
        }
    };
    let engine = Arc::new(Mutex::new(Engine {
        topology,
        guarantee: settings.guarantee,
        producer,
        restorer,
        changelogs: settings.inputs.iter().cloned().collect(),
        tasks: BTreeMap::new(),
        offsets: BTreeMap::new(),
        in_transaction: false,
        records: 0,
        trace_links: Vec::new(),
        failed: None,
        halted: false,
        restoring: Arc::clone(&stop.restoring),
        unassigned: true,
    }));
    let outcome = consume(&engine, settings, stop);
    lock(&engine).assigned();
    // The consumer (whose context holds the engine) is gone: the topology comes back.
    let topology = Arc::try_unwrap(engine)
        .ok()
        .map(|engine| engine.into_inner().unwrap_or_else(PoisonError::into_inner).topology);
    (outcome, topology)
}

/// The producer (transactions initialised when exactly once) and the restore consumer;
/// `None` when stopped first.
fn clients(
    settings: &Settings,
    stop: &Stop,
) -> Result<Option<(ThreadedProducer<Deliveries>, BaseConsumer)>, RunError> {
    let mut producer_config = settings.config.clone();
    producer_config.set("enable.idempotence", "true").set("acks", "all").set("message.timeout.ms", "20000");
    if settings.guarantee == Guarantee::ExactlyOnce {
        producer_config
            .set("transactional.id", &settings.transactional_id)
            .set("transaction.timeout.ms", "60000");
    }
    let producer: ThreadedProducer<Deliveries> = producer_config.create_with_context(Deliveries::default())?;
    if settings.guarantee == Guarantee::ExactlyOnce && !init_transactions(&producer, stop)? {
        return Ok(None);
    }
    let mut restorer_config = settings.config.clone();
    restorer_config
        .set("group.id", format!("{}-restore", settings.application_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed");
    let restorer: BaseConsumer = restorer_config.create()?;
    Ok(Some((producer, restorer)))
}

/// Subscribes a consumer with the engine in its context and runs the poll-process-commit
/// loop until a stop or an error.
fn consume<T: Topology>(
    engine: &Arc<Mutex<Engine<T>>>,
    settings: &Settings,
    stop: &Stop,
) -> Result<(), RunError> {
    let mut consumer_config = settings.config.clone();
    consumer_config
        .set("group.id", &settings.application_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("statistics.interval.ms", "5000");
    // The broker's default session (45 s) is how long a crashed instance's tasks wait
    // before the group gives them to another instance or to its restarted self.
    if consumer_config.get("session.timeout.ms").is_none() {
        consumer_config.set("session.timeout.ms", "10000");
    }
    let consumer: BaseConsumer<Context<T>> =
        consumer_config.create_with_context(Context { engine: Arc::clone(engine) })?;
    let topics: Vec<&str> = settings.inputs.iter().map(|(input, _)| input.as_str()).collect();
    consumer.subscribe(&topics)?;

    let mut last_commit = Instant::now();
    let outcome = loop {
        if stop.halt.load(Ordering::SeqCst) {
            lock(engine).halted = true;
            warn!("halted: the open transaction is left for the next instance to abort");
            break Ok(());
        }
        let stopping = stop.stop.load(Ordering::SeqCst);
        let message = if stopping { None } else { consumer.poll(Duration::from_millis(20)) };
        let mut engine = lock(engine);
        if let Some(error) = engine.failed.take() {
            break Err(error);
        }
        let mut result = match message {
            Some(Ok(message)) => engine.process(&message),
            Some(Err(error)) => {
                warn!(%error, "consumer error");
                Ok(())
            }
            None => Ok(()),
        };
        let due = stopping
            || last_commit.elapsed() >= settings.commit_interval
            || engine.records >= settings.max_records_per_transaction;
        if result.is_ok() && due {
            result = engine.commit(&consumer);
            last_commit = Instant::now();
        }
        match result {
            Ok(()) if stopping => {
                info!("stopped after the last commit");
                break Ok(());
            }
            Ok(()) => {}
            Err(KafkaError::Transaction(error)) if error.txn_requires_abort() => {
                warn!(%error, "abortable transaction error: aborting, restoring, seeking back");
                if let Err(error) = engine.recover(&consumer) {
                    break Err(error);
                }
            }
            // A commit that timed out (the brokers away longer than the transaction
            // timeout) or that the group moved past: rejoin rather than end the run.
            Err(error) => break Err(in_rebalance(error)),
        }
    };
    // A run that fails commits nothing more: closing the consumer revokes its partitions,
    // and the revoke callback must not commit what the failure left (offsets of records
    // whose outputs were lost).
    if outcome.is_err() {
        let mut engine = lock(engine);
        engine.halted = true;
        if let Some((code, reason)) = engine.producer.client().fatal_error() {
            return Err(RunError::ProducerFatal { code, reason });
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_default_to_kafka_streams_exactly_once_commits() {
        let settings = Settings::new("app", "app-0", &[("in", "app-state-changelog")], ClientConfig::new());
        assert_eq!(settings.commit_interval, Duration::from_millis(100));
        assert_eq!(settings.inputs, vec![("in".to_string(), "app-state-changelog".to_string())]);
    }

    #[test]
    fn only_the_group_or_transaction_moving_on_rejoins() {
        use rdkafka::types::RDKafkaErrorCode as C;
        let rejoins = |error| matches!(in_rebalance(error), RunError::Rebalance(_));
        assert!(rejoins(KafkaError::ConsumerCommit(C::RebalanceInProgress)));
        assert!(rejoins(KafkaError::Global(C::IllegalGeneration)));
        assert!(rejoins(KafkaError::MetadataFetch(C::OperationTimedOut)));
        assert!(
            !rejoins(KafkaError::MessageProduction(C::MessageSizeTooLarge)),
            "a refused delivery ends the run"
        );
        assert!(
            !rejoins(KafkaError::MetadataFetch(C::UnknownTopicOrPartition)),
            "so does a missing changelog"
        );
    }

    #[test]
    fn no_input_is_refused() {
        struct Nothing;
        impl Topology for Nothing {
            type Task = ();
            fn new_task(&self, _: &str, _: i32) {}
            fn restore(&self, (): &mut (), _: &[u8], _: Option<&[u8]>) -> Result<(), String> {
                Ok(())
            }
            fn process(&self, (): &mut (), _: Input<'_>, _: &mut Vec<Output>) {}
            fn punctuate(&self, (): &mut (), _: i64, _: &mut Vec<Output>) {}
            fn changelog(&self, (): &mut ()) -> Vec<ChangelogRecord> {
                Vec::new()
            }
        }
        let settings =
            Settings { inputs: Vec::new(), ..Settings::new("app", "app-0", &[], ClientConfig::new()) };
        assert!(matches!(run(Nothing, &settings, &Stop::new()), Err(RunError::Settings(_))));
    }
}
