//! [`Relay`]: the workers' publish-and-clear loop, wired to the lease keeper and the
//! backlog gauge.

use std::{sync::Arc, time::Duration};

use deadpool_postgres::Pool;
use rdkafka::ClientConfig;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    Error, Result,
    backoff::Backoff,
    lease::{LeaseKeeper, LeaseSettings},
    metric,
    publish::{Enqueued, Publisher},
    status::{RelayStatus, Shared},
    store::{OutboxRow, Store, StoreError},
};

/// How long one read or clear may take before it counts as failed.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings of a [`Relay`]; [`RelayOptions::default`] gives sensible ones.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Number of shards the writers spread keys over (the `shard` column is in
    /// `0 .. shards`). Must match the writers.
    pub shards: i32,
    /// Channel the writers `NOTIFY` at commit; `None` relies on polling alone.
    pub notify_channel: Option<String>,
    /// How often an idle worker looks for rows without being notified: the fallback
    /// for a missed notification.
    pub poll_interval: Duration,
    /// Rows read, produced and cleared per batch (per worker).
    pub batch_size: usize,
    /// Workers per relay; each takes the owned shards `s` with `s % workers == i`. One
    /// is usually enough (it pipelines its own batches); more run more batches at once
    /// but read once each per notification.
    pub workers: usize,
    /// How often the relay checks membership and takes or hands back shards.
    pub rebalance_interval: Duration,
    /// At shutdown, how long a batch in flight may still wait for its
    /// acknowledgements before it is left (unacknowledged rows stay in the outbox).
    pub drain_timeout: Duration,
    /// How long a batch may wait for acknowledgements before the status reports the
    /// relay not ready (the broker is down or unreachable).
    pub stall_threshold: Duration,
    /// First delay before retrying a failed read, clear, publication or session.
    pub retry_backoff_min: Duration,
    /// Longest delay between retries.
    pub retry_backoff_max: Duration,
    /// First key of the advisory locks (shard locks are `(namespace, shard)`, the
    /// membership lock `(namespace, i32::MAX)`); change it only to run two unrelated
    /// relays on one database.
    pub lock_namespace: i32,
    /// How often the backlog gauges are refreshed.
    pub backlog_interval: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            shards: 64,
            notify_channel: Some("outbox".into()),
            poll_interval: Duration::from_secs(1),
            batch_size: 5000,
            workers: 1,
            rebalance_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
            stall_threshold: Duration::from_secs(5),
            retry_backoff_min: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(5),
            lock_namespace: 0x6f75_7462, // "outb"
            backlog_interval: Duration::from_secs(5),
        }
    }
}

impl RelayOptions {
    fn validate(&self) -> Result<()> {
        let problem = if self.shards < 1 {
            "shards must be at least 1"
        } else if self.shards == i32::MAX {
            "shards must be below i32::MAX (the membership lock's key)"
        } else if self.batch_size == 0 {
            "batch_size must be at least 1"
        } else if self.workers == 0 {
            "workers must be at least 1"
        } else if self.poll_interval.is_zero() || self.rebalance_interval.is_zero() {
            "poll_interval and rebalance_interval must be positive"
        } else {
            return Ok(());
        };
        Err(Error::Options(problem.into()))
    }
}

/// Publishes the outbox to Kafka until cancelled. See the [crate docs](crate) for the
/// design and its guarantees.
#[derive(Debug)]
pub struct Relay {
    store: Store,
    publisher: Arc<Publisher>,
    session: tokio_postgres::Config,
    options: RelayOptions,
    shared: Arc<Shared>,
}

impl Relay {
    /// A relay reading and clearing rows through `pool`, holding its shard leases on a
    /// session of its own opened with `session` (the same database, a direct
    /// connection), and producing with `producer` (bootstrap servers and any client
    /// settings; idempotence, `acks=all` and no delivery timeout are forced).
    ///
    /// # Errors
    /// When the options are inconsistent or the producer cannot be created.
    pub fn new(
        pool: Pool,
        session: tokio_postgres::Config,
        producer: &ClientConfig,
        options: RelayOptions,
    ) -> Result<Self> {
        options.validate()?;
        metric::describe();
        let publisher = Arc::new(Publisher::new(producer)?);
        let shared = Arc::new(Shared::new(options.workers, options.stall_threshold));
        Ok(Self { store: Store::new(pool), publisher, session, options, shared })
    }

    /// A handle on the relay's status (readiness, shards owned), valid after `run` too.
    pub fn status(&self) -> RelayStatus {
        RelayStatus { shared: Arc::clone(&self.shared) }
    }

    /// Runs until `token` is cancelled, then drains (see "Shutdown" in the crate docs)
    /// and releases its shards.
    ///
    /// # Errors
    /// Only when one of its tasks panicked; failures of the database or the broker are
    /// retried, not returned.
    pub async fn run(self, token: CancellationToken) -> Result<()> {
        let Self { store, publisher, session, options, shared } = self;
        let leases_token = CancellationToken::new();
        let keeper = LeaseKeeper {
            config: session,
            settings: LeaseSettings {
                shards: options.shards,
                namespace: options.lock_namespace,
                channel: options.notify_channel.clone(),
                interval: options.rebalance_interval,
                backoff: (options.retry_backoff_min, options.retry_backoff_max),
            },
            shared: Arc::clone(&shared),
        };
        let keeper = tokio::spawn(keeper.run(leases_token.clone()));
        let backlog = tokio::spawn(backlog_gauge(store.clone(), options.backlog_interval, token.clone()));

        let mut workers = JoinSet::new();
        for index in 0..options.workers {
            let worker = Worker {
                index,
                store: store.clone(),
                publisher: Arc::clone(&publisher),
                shared: Arc::clone(&shared),
                options: options.clone(),
            };
            workers.spawn(worker.run(token.clone()));
        }
        let mut outcome = Ok(());
        while let Some(joined) = workers.join_next().await {
            if let Err(e) = joined {
                token.cancel();
                outcome = Err(Error::Task(e));
            }
        }
        // Every batch is finished or left: only now may another relay take the shards.
        leases_token.cancel();
        keeper.await?;
        backlog.await?;
        outcome
    }
}

struct Worker {
    index: usize,
    store: Store,
    publisher: Arc<Publisher>,
    shared: Arc<Shared>,
    options: RelayOptions,
}

/// Why a batch did not complete.
#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error("reading the outbox failed: {0}")]
    Read(#[source] StoreError),
    #[error("clearing published rows failed (they will be published again): {0}")]
    Clear(#[source] StoreError),
    #[error("{0}")]
    Publish(String),
    #[error("a statement took longer than {STATEMENT_TIMEOUT:?}")]
    Timeout(&'static str),
}

impl BatchError {
    fn stage(&self) -> &'static str {
        match self {
            BatchError::Read(_) => "read",
            BatchError::Clear(_) => "clear",
            BatchError::Publish(_) => "publish",
            BatchError::Timeout(stage) => stage,
        }
    }
}

/// The time a worker's batches have left to finish once shutdown started.
struct Drain {
    timeout: Duration,
    deadline: Option<tokio::time::Instant>,
}

impl Drain {
    fn new(timeout: Duration) -> Self {
        Self { timeout, deadline: None }
    }

    /// What is left: the whole timeout before shutdown, counting down from its start.
    fn left(&mut self, token: &CancellationToken) -> Duration {
        if !token.is_cancelled() {
            return self.timeout;
        }
        let deadline = *self.deadline.get_or_insert_with(|| tokio::time::Instant::now() + self.timeout);
        deadline.saturating_duration_since(tokio::time::Instant::now())
    }
}

/// How a run of batches over one set of shards ended.
enum Run {
    /// The shards have no more rows for now: sleep until woken.
    Idle,
    /// Stopped early with rows left (ownership is changing): go again at once.
    Again,
    /// Shutdown: the worker stops.
    Stopped,
}

impl Worker {
    async fn run(self, token: CancellationToken) {
        let mut backoff = Backoff::new(self.options.retry_backoff_min, self.options.retry_backoff_max);
        while !token.is_cancelled() {
            let shards = self.shared.begin_batch(self.index);
            if shards.is_empty() {
                self.idle(&token).await;
                continue;
            }
            let result = self.batches(&shards, &token).await;
            self.shared.end_batch(&shards);
            match result {
                Ok(Run::Again) => backoff.reset(),
                Ok(Run::Idle) => {
                    backoff.reset();
                    self.idle(&token).await;
                }
                Ok(Run::Stopped) => break,
                Err(e) => {
                    metrics::counter!(metric::ERRORS, "stage" => e.stage()).increment(1);
                    let delay = backoff.next_delay();
                    let error = crate::error_chain(&e);
                    match &e {
                        BatchError::Publish(_) => {
                            tracing::error!(worker = self.index, error, retry_in = ?delay, "outbox batch failed");
                        }
                        _ => {
                            tracing::warn!(worker = self.index, error, retry_in = ?delay, "outbox batch failed")
                        }
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = token.cancelled() => {}
                    }
                }
            }
        }
    }

    /// Sleeps until a notification, the poll interval or shutdown.
    async fn idle(&self, token: &CancellationToken) {
        tokio::select! {
            () = self.shared.woken(self.index) => {}
            () = tokio::time::sleep(self.options.poll_interval) => {}
            () = token.cancelled() => {}
        }
    }

    /// Publishes batches of `shards` as a pipeline two deep: batch `n + 1` is read and
    /// handed to the producer while batch `n` waits for its acknowledgements, then `n`
    /// is cleared. The read of `n + 1` leaves out the rows of `n` (produced, not yet
    /// cleared); everything else about the order argument of the crate docs holds, the
    /// same producer sending `n` before `n + 1`.
    async fn batches(&self, shards: &[i32], token: &CancellationToken) -> Result<Run, BatchError> {
        let mut in_flight: Option<Enqueued> = None;
        // At shutdown, one drain deadline for the whole pipeline.
        let mut drain = Drain::new(self.options.drain_timeout);
        loop {
            // Stop reading at shutdown, or when one of these shards is being handed back
            // or was lost (the batch in flight is still finished).
            let reading = !token.is_cancelled() && self.shared.still_mine(shards);
            let read = if reading { Some(self.read(shards, in_flight.as_ref()).await) } else { None };
            let next = match read {
                Some(Ok((rows, full))) if !rows.is_empty() => {
                    Some((self.publisher.enqueue(&rows, token, drain.left(token)).await, full))
                }
                Some(Ok(_)) | None => None,
                Some(Err(e)) => {
                    if let Some(batch) = in_flight.take() {
                        self.finish(batch, token, &mut drain).await?;
                    }
                    return Err(e);
                }
            };
            if let Some(batch) = in_flight.take() {
                let finished = self.finish(batch, token, &mut drain).await;
                if let Err(e) = finished {
                    if let Some((batch, _)) = next {
                        // Its acknowledged rows are cleared; its error, if any, is the same kind.
                        let _ = self.finish(batch, token, &mut drain).await;
                    }
                    return Err(e);
                }
            }
            match next {
                Some((batch, true)) => in_flight = Some(batch),
                Some((batch, false)) => {
                    self.finish(batch, token, &mut drain).await?;
                    return Ok(if token.is_cancelled() { Run::Stopped } else { Run::Idle });
                }
                None if token.is_cancelled() => return Ok(Run::Stopped),
                None if reading => return Ok(Run::Idle),
                None => return Ok(Run::Again),
            }
        }
    }

    /// Reads the next batch: the oldest `batch_size` rows of `shards` but for the rows
    /// of the batch `in_flight`. Returns the rows in id order, and whether the read was
    /// full (more rows are probably waiting).
    async fn read(
        &self,
        shards: &[i32],
        in_flight: Option<&Enqueued>,
    ) -> Result<(Vec<OutboxRow>, bool), BatchError> {
        let produced: Vec<i64> =
            in_flight.map(|batch| batch.ids.iter().copied().collect()).unwrap_or_default();
        let rows = tokio::time::timeout(
            STATEMENT_TIMEOUT,
            self.store.read(shards, self.options.batch_size, &produced),
        )
        .await
        .map_err(|_| BatchError::Timeout("read"))?
        .map_err(BatchError::Read)?;
        let full = rows.len() >= self.options.batch_size;
        if !rows.is_empty() {
            metrics::histogram!(metric::BATCH_ROWS).record(rows.len() as f64);
        }
        Ok((rows, full))
    }

    /// Waits for the acknowledgements of `batch` and clears the acknowledged rows.
    async fn finish(
        &self,
        batch: Enqueued,
        token: &CancellationToken,
        drain: &mut Drain,
    ) -> Result<(), BatchError> {
        let rows = batch.ids.len();
        let started = tokio::time::Instant::now();
        self.shared.publishing(self.index, true);
        let published = self.publisher.acknowledged(batch, token, drain.left(token)).await;
        self.shared.publishing(self.index, false);
        self.shared.publish_outcome(published.failure.clone());
        let acknowledged = started.elapsed();
        if !published.acked.is_empty() {
            tokio::time::timeout(STATEMENT_TIMEOUT, self.store.clear(&published.acked))
                .await
                .map_err(|_| BatchError::Timeout("clear"))?
                .map_err(BatchError::Clear)?;
        }
        tracing::debug!(
            worker = self.index,
            rows,
            acked = published.acked.len(),
            abandoned = published.abandoned,
            ?acknowledged,
            cleared = ?(started.elapsed() - acknowledged),
            "outbox batch"
        );
        if published.abandoned {
            metrics::counter!(metric::ABANDONED).increment(1);
            tracing::info!(
                worker = self.index,
                left = rows - published.acked.len(),
                "shutdown before every acknowledgement; unacknowledged rows stay in the outbox"
            );
        }
        match published.failure {
            Some(failure) => Err(BatchError::Publish(failure)),
            None => Ok(()),
        }
    }
}

/// Refreshes the backlog gauges until `token` is cancelled.
async fn backlog_gauge(store: Store, interval: Duration, token: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = token.cancelled() => return,
        }
        match tokio::time::timeout(STATEMENT_TIMEOUT, store.backlog()).await {
            Ok(Ok(backlog)) => {
                metrics::gauge!(metric::BACKLOG_ROWS).set(backlog.rows as f64);
                metrics::gauge!(metric::BACKLOG_OLDEST_AGE).set(backlog.oldest_age_seconds);
            }
            Ok(Err(e)) => {
                metrics::counter!(metric::ERRORS, "stage" => "backlog").increment(1);
                tracing::debug!(error = crate::error_chain(&e), "cannot measure the outbox backlog");
            }
            Err(_) => metrics::counter!(metric::ERRORS, "stage" => "backlog").increment(1),
        }
    }
}
