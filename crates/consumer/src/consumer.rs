//! [`Consumer`]: the loop. See the [crate docs](crate) for what it guarantees.
//!
//! Three parts run side by side:
//!
//! - the **poll thread** owns the librdkafka poll: it never stops polling (so a slow
//!   handler never breaches `max.poll.interval.ms`), runs the rebalance callbacks and
//!   sends each record, tagged with its partition's epoch, to the loop;
//! - the **loop** files records into the [`Scheduler`] by key, starts ready ones while
//!   fewer than `concurrency` are in flight, pauses every partition while the buffer is
//!   full and resumes them below half, and commits the done prefixes every
//!   `commit_interval`;
//! - one **task** per record being handled: it parks the record when its key is held,
//!   else calls the handler, and on a failure for good produces the dead letter,
//!   stores it and holds the key. It reports to [`Shared`] itself, so a revocation
//!   waiting in the poll thread never depends on the loop.

use std::{
    collections::HashSet,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use backon::BackoffBuilder as _;
use futures::FutureExt as _;
use rdkafka::{
    ClientConfig,
    consumer::{BaseConsumer, CommitMode, Consumer as _},
};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, debug, error, info, warn};

use crate::{
    Error, Failure, Handler, Record, Result, Settings, Store,
    context::{Context, Event},
    dead_letter::DeadLetters,
    metric,
    schedule::Scheduler,
    shared::Shared,
};

/// The scheduler's key: records of one key of one partition, under one epoch of it.
type ShardKey = (String, i32, u64, Option<Vec<u8>>);

/// A record waiting or being handled.
#[derive(Debug)]
struct Work {
    record: Arc<Record>,
    epoch: u64,
    /// Attempts made so far.
    attempts: u32,
    size: usize,
}

/// How a task ended.
#[derive(Debug)]
enum Outcome {
    /// Handled, parked or dead-lettered: done.
    Done,
    /// A transient failure: try again after the delay.
    Retry(Duration),
    /// Stopped by the shutdown before it was done: handled again after a restart.
    Abandoned,
}

/// What the tasks share.
struct Tasks<H> {
    handler: H,
    store: Store,
    dead_letters: DeadLetters,
    settings: Settings,
    shared: Arc<Shared>,
    /// The keys held back behind a dead letter (a cache of the store's).
    held: Mutex<HashSet<Vec<u8>>>,
    token: CancellationToken,
}

/// A reliable consumer: see the [crate docs](crate).
pub struct Consumer<H> {
    settings: Settings,
    store: Store,
    handler: H,
}

impl<H> std::fmt::Debug for Consumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// The librdkafka settings the consumer's guarantees need, applied over `base`:
/// manual commits only, cooperative-sticky assignment, read-committed, the earliest
/// offset for a new group, statistics for the lag gauges, a session of 10 s (the
/// broker's default, 45 s, is how long a crashed member's partitions wait before the
/// group gives them to another member or to its restarted self; librdkafka heartbeats
/// from a thread of its own, which slow handlers do not hold up), and `group.id` =
/// `name` when `base` names none.
pub fn consumer_config(base: &ClientConfig, name: &str) -> ClientConfig {
    let mut config = base.clone();
    config
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("isolation.level", "read_committed");
    for (key, value) in [
        ("group.id", name),
        ("auto.offset.reset", "earliest"),
        ("statistics.interval.ms", "5000"),
        ("fetch.queue.backoff.ms", "10"),
        ("session.timeout.ms", "10000"),
    ] {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    config
}

impl<H: Handler> Consumer<H> {
    /// A consumer with `settings`, keeping its dead letters and held keys in `store`
    /// (migrated: see [`Store::migrate`]), calling `handler` for each record.
    pub fn new(settings: Settings, store: Store, handler: H) -> Result<Self> {
        settings.validate()?;
        Ok(Self { settings, store, handler })
    }

    /// Runs until `token` is cancelled (then drains, commits and leaves the group) or
    /// a fatal error.
    pub async fn run(self, token: CancellationToken) -> Result<()> {
        let Self { settings, store, handler } = self;
        metric::describe();
        let held = load_held_keys(&store, &settings, &token).await?;
        let shared = Arc::new(Shared::default());
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let context = Context {
            shared: Arc::clone(&shared),
            events: events_tx,
            revoke_timeout: settings.revoke_timeout,
        };
        let consumer: Arc<BaseConsumer<Context>> =
            Arc::new(consumer_config(&settings.config, &settings.name).create_with_context(context)?);
        let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let dead_letters = DeadLetters::new(&settings.config, &settings.dead_letter_topic, &settings.name)?;
        metrics::gauge!(metric::HELD_KEYS).set(held.len() as f64);
        let tasks = Arc::new(Tasks {
            handler,
            store,
            dead_letters,
            settings: settings.clone(),
            shared: Arc::clone(&shared),
            held: Mutex::new(held),
            token: token.clone(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let poller = spawn_poller(Arc::clone(&consumer), Arc::clone(&stop))?;
        info!(consumer = settings.name, topics = ?settings.topics, "consumer started");

        let mut state = Loop {
            scheduler: Scheduler::default(),
            running: JoinSet::new(),
            buffered: 0,
            bytes: 0,
            paused: false,
        };
        let mut commit = tokio::time::interval(settings.commit_interval);
        commit.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result = loop {
            state.start_ready(&tasks, &settings);
            state.apply_back_pressure(&consumer, &settings);
            let retry_at = state.scheduler.next_retry().map(tokio::time::Instant::from_std);
            tokio::select! {
                biased;
                () = token.cancelled() => break Ok(()),
                Some(joined) = state.running.join_next(), if !state.running.is_empty() => {
                    match joined {
                        Ok((key, work, outcome)) => state.ended(key, work, outcome),
                        Err(e) => break Err(Error::Settings(format!("a handler task failed: {e}"))),
                    }
                }
                event = events.recv() => match event {
                    Some(Event::Record { epoch, record }) => state.accept(&shared, epoch, record),
                    Some(Event::Assigned(partitions)) => {
                        debug!(?partitions, "reloading held keys for new partitions");
                        match load_held_keys(&tasks.store, &settings, &token).await {
                            Ok(held) => {
                                metrics::gauge!(metric::HELD_KEYS).set(held.len() as f64);
                                *tasks.held.lock().unwrap_or_else(PoisonError::into_inner) = held;
                            }
                            Err(e) => break Err(e),
                        }
                        if state.paused
                            && let Ok(assignment) = consumer.assignment()
                        {
                            let _ = consumer.pause(&assignment);
                        }
                    }
                    Some(Event::Revoked(partitions)) => state.revoked(&partitions),
                    None => break Err(Error::Settings("the poll thread stopped".into())),
                },
                _ = commit.tick() => {
                    let positions = shared.commit_due();
                    if positions.count() > 0
                        && let Err(e) = consumer.commit(&positions, CommitMode::Async)
                    {
                        debug!(error = %e, "commit failed; the next one carries the positions on");
                    }
                }
                () = sleep_until(retry_at) => {}
            }
        };

        // Shutdown: let the records in flight finish (bounded), commit, leave.
        let drain = tokio::time::sleep(settings.drain_timeout);
        tokio::pin!(drain);
        while !state.running.is_empty() {
            tokio::select! {
                Some(joined) = state.running.join_next() => {
                    if let Ok((key, work, outcome)) = joined {
                        state.ended(key, work, outcome);
                    }
                }
                () = &mut drain => {
                    warn!(running = state.running.len(), "records still being handled at the drain deadline; they will be handled again");
                    state.running.shutdown().await;
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        let closing = tokio::task::spawn_blocking(move || {
            let _ = poller.join();
            let positions = shared.positions();
            if positions.count() > 0
                && let Err(e) = consumer.commit(&positions, CommitMode::Sync)
            {
                warn!(error = %e, "the last commit failed; records after the previous one will be handled again");
            }
            drop(consumer); // leaves the group (the revoke callback runs here)
        });
        let _ = closing.await;
        info!(consumer = settings.name, "consumer stopped");
        result
    }
}

/// The loop's own state.
struct Loop {
    scheduler: Scheduler<ShardKey, Work>,
    running: JoinSet<(ShardKey, Work, Outcome)>,
    buffered: usize,
    bytes: usize,
    paused: bool,
}

impl Loop {
    fn accept(&mut self, shared: &Shared, epoch: u64, record: Record) {
        if !shared.take(&record.topic, record.partition, epoch, record.offset) {
            return; // stale or a redelivery
        }
        let size = record.size();
        self.buffered += 1;
        self.bytes += size;
        let key = (record.topic.clone(), record.partition, epoch, record.key.clone());
        self.scheduler.push(key, Work { record: Arc::new(record), epoch, attempts: 0, size });
        metrics::gauge!(metric::BUFFERED).set(self.buffered as f64);
    }

    fn start_ready<H: Handler>(&mut self, tasks: &Arc<Tasks<H>>, settings: &Settings) {
        if tasks.token.is_cancelled() {
            return;
        }
        while self.scheduler.running() < settings.concurrency {
            let Some((key, work)) = self.scheduler.next(Instant::now()) else { break };
            let record = &work.record;
            if !tasks.shared.start(&record.topic, record.partition, work.epoch) {
                // Its partition was revoked: the next owner handles it.
                self.scheduler.finish(&key);
                self.forget(&work);
                continue;
            }
            let tasks = Arc::clone(tasks);
            self.running.spawn(async move {
                let outcome = tasks.run(&work).await;
                let record = &work.record;
                let done = matches!(outcome, Outcome::Done);
                tasks.shared.ended(&record.topic, record.partition, work.epoch, record.offset, done);
                (key, work, outcome)
            });
        }
        metrics::gauge!(metric::IN_FLIGHT).set(self.scheduler.running() as f64);
    }

    fn ended(&mut self, key: ShardKey, mut work: Work, outcome: Outcome) {
        match outcome {
            Outcome::Retry(delay) => {
                metrics::counter!(metric::RETRIES).increment(1);
                work.attempts += 1;
                self.scheduler.retry(&key, work, Instant::now() + delay);
            }
            Outcome::Done | Outcome::Abandoned => {
                self.scheduler.finish(&key);
                self.forget(&work);
            }
        }
        metrics::gauge!(metric::IN_FLIGHT).set(self.scheduler.running() as f64);
        metrics::gauge!(metric::RETRYING_KEYS).set(self.scheduler.retrying() as f64);
    }

    fn revoked(&mut self, partitions: &[(String, i32)]) {
        let dropped = self.scheduler.remove_keys(|(topic, partition, _, _)| {
            partitions.iter().any(|(t, p)| t == topic && p == partition)
        });
        for work in &dropped {
            self.forget(work);
        }
    }

    fn forget(&mut self, work: &Work) {
        self.buffered = self.buffered.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(work.size);
        metrics::gauge!(metric::BUFFERED).set(self.buffered as f64);
    }

    /// Pauses every assigned partition while the buffer is full, resumes them below
    /// half of both limits. The poll thread keeps polling either way.
    fn apply_back_pressure(&mut self, consumer: &BaseConsumer<Context>, settings: &Settings) {
        let full =
            self.buffered >= settings.max_buffered_records || self.bytes >= settings.max_buffered_bytes;
        let low =
            self.buffered < settings.max_buffered_records / 2 && self.bytes < settings.max_buffered_bytes / 2;
        if (full && !self.paused) || (low && self.paused) {
            let Ok(assignment) = consumer.assignment() else { return };
            let result = if full { consumer.pause(&assignment) } else { consumer.resume(&assignment) };
            match result {
                Ok(()) => {
                    self.paused = full;
                    metrics::gauge!(metric::PAUSED).set(if full { 1.0 } else { 0.0 });
                    debug!(paused = full, buffered = self.buffered, bytes = self.bytes, "back-pressure");
                }
                Err(e) => warn!(error = %e, "pausing or resuming the partitions failed"),
            }
        }
    }
}

impl<H: Handler> Tasks<H> {
    /// Handles one record (or parks it); on a failure for good, dead-letters it.
    async fn run(&self, work: &Work) -> Outcome {
        let record = &work.record;
        let attempt = work.attempts + 1;
        if let Some(key) = &record.key
            && self.held.lock().unwrap_or_else(PoisonError::into_inner).contains(key)
        {
            match self.retrying("park", || self.store.park(record)).await {
                Some(true) => {
                    metrics::counter!(metric::PARKED).increment(1);
                    debug!(origin = record.origin(), "parked behind its key's dead letter");
                    return Outcome::Done;
                }
                Some(false) => {
                    // Released meanwhile (a replay or a discard): handle it.
                    self.held.lock().unwrap_or_else(PoisonError::into_inner).remove(key);
                }
                None => return Outcome::Abandoned,
            }
        }
        let started = Instant::now();
        // The handling continues the producer's trace (the record's `traceparent`).
        let span = tracing::info_span!(
            "consume",
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.destination.name = %record.topic,
            partition = record.partition,
            offset = record.offset,
            attempt,
        );
        orders_trace_context::set_parent(
            &span,
            record.header(orders_trace_context::TRACEPARENT),
            record.header(orders_trace_context::TRACESTATE),
        );
        let handled = AssertUnwindSafe(self.handler.handle(record).instrument(span)).catch_unwind().await;
        metrics::histogram!(metric::HANDLER_SECONDS).record(started.elapsed().as_secs_f64());
        let failure = match handled {
            Ok(Ok(())) => {
                metrics::counter!(metric::HANDLED, "outcome" => "ok").increment(1);
                return Outcome::Done;
            }
            Ok(Err(failure)) => failure,
            Err(_panic) => Failure::permanent("the handler panicked"),
        };
        if failure.is_unavailable() {
            let delay = self.settings.retry.delay_unbounded(attempt + 1);
            debug!(origin = record.origin(), attempt, %failure, ?delay, "a dependency is unavailable; retrying");
            return Outcome::Retry(delay);
        }
        if failure.is_transient()
            && let Some(delay) = self.settings.retry.delay_before(attempt + 1)
        {
            debug!(origin = record.origin(), attempt, %failure, ?delay, "handler failed; retrying");
            return Outcome::Retry(delay);
        }
        let reason = failure.to_string();
        warn!(
            origin = record.origin(),
            key = record.key_text(),
            attempts = attempt,
            reason,
            "dead-lettering a record"
        );
        let sent = self
            .retrying("dead-letter", || async {
                self.dead_letters.send(record, &reason, attempt).await?;
                self.store.dead_letter(record, &reason, attempt).await
            })
            .await;
        if sent.is_none() {
            return Outcome::Abandoned;
        }
        metrics::counter!(metric::DEAD_LETTERS, "kind" => if failure.is_transient() { "exhausted" } else { "permanent" })
            .increment(1);
        if let Some(key) = &record.key {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            held.insert(key.clone());
            metrics::gauge!(metric::HELD_KEYS).set(held.len() as f64);
        }
        Outcome::Done
    }

    /// Runs `operation` until it succeeds, with backoff; `None` when the shutdown
    /// began first.
    async fn retrying<T, F, Fut>(&self, what: &str, mut operation: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(self.settings.retry.min_delay)
            .with_max_delay(self.settings.retry.max_delay.max(self.settings.retry.min_delay))
            .without_max_times()
            .with_jitter()
            .build();
        loop {
            match operation().await {
                Ok(value) => return Some(value),
                Err(e) => {
                    let delay = backoff.next().unwrap_or(self.settings.retry.max_delay);
                    error!(error = %e, ?delay, "{what} failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.token.cancelled() => return None,
                    }
                }
            }
        }
    }
}

async fn load_held_keys(
    store: &Store,
    settings: &Settings,
    token: &CancellationToken,
) -> Result<HashSet<Vec<u8>>> {
    let mut backoff = backon::ExponentialBuilder::default()
        .with_min_delay(settings.retry.min_delay)
        .with_max_delay(settings.retry.max_delay.max(settings.retry.min_delay))
        .without_max_times()
        .with_jitter()
        .build();
    loop {
        match store.held_keys().await {
            Ok(held) => return Ok(held),
            Err(e) => {
                let delay = backoff.next().unwrap_or(settings.retry.max_delay);
                warn!(error = %e, ?delay, "cannot read the held keys; retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    // Shutdown: nothing will be handled any more, so no key needs holding.
                    () = token.cancelled() => return Ok(HashSet::new()),
                }
            }
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The poll thread: polls until `stop`, sending records to the loop (the rebalance
/// callbacks run inside `poll`).
fn spawn_poller(
    consumer: Arc<BaseConsumer<Context>>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("consumer-poll".into())
        .spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                match consumer.poll(Duration::from_millis(100)) {
                    None => {}
                    Some(Ok(message)) => {
                        let record = Record::from_message(&message);
                        drop(message);
                        let context = consumer.context();
                        if let Some(epoch) = context.shared.epoch(&record.topic, record.partition) {
                            let _ = context.events.send(Event::Record { epoch, record });
                        }
                    }
                    Some(Err(e)) => warn!(error = %e, "consumer error"),
                }
            }
        })
        .map_err(|e| Error::Settings(format!("cannot start the poll thread: {e}")))
}
