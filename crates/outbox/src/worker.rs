//! A worker: the publish-and-clear loop over its share of the owned shards (see "How it
//! works" in the crate docs), with the quarantine of rows that can never be published.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use backon::BackoffBuilder as _;
use tokio_util::sync::CancellationToken;

use crate::{
    RelayOptions, metric,
    publish::{Enqueued, PublishError, Publisher},
    quarantine::{Attempts, Held},
    status::Shared,
    store::{OutboxRow, Store, StoreError},
};

/// How long one read, clear or quarantine may take before it counts as failed.
pub(crate) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Worker {
    pub(crate) index: usize,
    pub(crate) store: Store,
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) options: RelayOptions,
    pub(crate) attempts: Mutex<Attempts>,
    pub(crate) held: Mutex<Held>,
}

/// Why a batch did not complete.
#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error("reading the outbox failed: {0}")]
    Read(#[source] StoreError),
    #[error("clearing published rows failed (they will be published again): {0}")]
    Clear(#[source] StoreError),
    #[error("quarantining row {id} failed (it will be tried again): {error}")]
    Quarantine {
        id: i64,
        #[source]
        error: StoreError,
    },
    /// `quarantined`: the failing row was set aside; `held`: its key is held back for
    /// that long, until the row's next attempt; `suspects`: that many rows failed
    /// together for a record's reason, to be sent alone. In these cases the other keys
    /// can go again at once.
    #[error("{failure}")]
    Publish {
        #[source]
        failure: PublishError,
        quarantined: bool,
        held: Option<Duration>,
        suspects: usize,
    },
    #[error("a statement took longer than {STATEMENT_TIMEOUT:?}")]
    Timeout(&'static str),
}

impl BatchError {
    fn stage(&self) -> &'static str {
        match self {
            BatchError::Read(_) => "read",
            BatchError::Clear(_) => "clear",
            BatchError::Quarantine { .. } => "quarantine",
            BatchError::Publish { .. } => "publish",
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
    /// Stopped early with rows left (the worker's share of the shards changed, or a
    /// row was quarantined): go again at once.
    Again,
    /// Shutdown: the worker stops.
    Stopped,
}

impl Worker {
    pub(crate) async fn run(self, token: CancellationToken) {
        let builder = self.options.backoff();
        let mut backoff = builder.build();
        while !token.is_cancelled() {
            let (shards, generation) = self.shared.begin_batch(self.index);
            if shards.is_empty() {
                self.idle(&token).await;
                continue;
            }
            let result = self.batches(&shards, generation, &token).await;
            self.shared.end_batch(&shards);
            match result {
                Ok(Run::Again) => backoff = builder.build(),
                Ok(Run::Idle) => {
                    backoff = builder.build();
                    self.idle(&token).await;
                }
                Ok(Run::Stopped) => break,
                Err(BatchError::Publish { failure, quarantined: true, .. }) => {
                    // Logged where it was quarantined; the rest goes on at once.
                    metrics::counter!(metric::ERRORS, "stage" => "publish").increment(1);
                    tracing::debug!(
                        worker = self.index,
                        error = crate::error_chain(&failure),
                        "row quarantined"
                    );
                    backoff = builder.build();
                }
                Err(BatchError::Publish { failure, held: Some(retry_in), .. }) => {
                    // Only its key waits; the other keys go on at once.
                    metrics::counter!(metric::ERRORS, "stage" => "publish").increment(1);
                    tracing::warn!(
                        worker = self.index,
                        error = crate::error_chain(&failure),
                        ?retry_in,
                        "outbox row refused; its key is held back until its next attempt before \
                         quarantine, the other keys go on"
                    );
                }
                Err(BatchError::Publish { failure, suspects, .. }) if suspects > 0 => {
                    metrics::counter!(metric::ERRORS, "stage" => "publish").increment(1);
                    tracing::warn!(
                        worker = self.index,
                        error = crate::error_chain(&failure),
                        suspects,
                        "outbox rows refused together; sending each alone to find the one at fault"
                    );
                }
                Err(e) => {
                    metrics::counter!(metric::ERRORS, "stage" => e.stage()).increment(1);
                    let delay = backoff.next().unwrap_or(self.options.retry_backoff_max);
                    let error = crate::error_chain(&e);
                    match &e {
                        BatchError::Publish { failure, .. } if failure.is_record_error() => {
                            tracing::warn!(worker = self.index, error, retry_in = ?delay, "outbox row refused; retrying before quarantine");
                        }
                        BatchError::Publish { .. } => {
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

    /// Sleeps until a notification, the poll interval, the release of a held-back key
    /// or shutdown.
    async fn idle(&self, token: &CancellationToken) {
        let now = tokio::time::Instant::now();
        let release = self.held.lock().unwrap_or_else(PoisonError::into_inner).next_release(now);
        let sleep = release.map_or(self.options.poll_interval, |r| r.min(self.options.poll_interval));
        tokio::select! {
            () = self.shared.woken(self.index) => {}
            () = tokio::time::sleep(sleep) => {}
            () = token.cancelled() => {}
        }
    }

    /// Publishes batches of `shards` as a pipeline two deep: batch `n + 1` is read and
    /// handed to the producer while batch `n` waits for its acknowledgements, then `n`
    /// is cleared. The read of `n + 1` leaves out the rows of `n` (produced, not yet
    /// cleared); everything else about the order argument of the crate docs holds, the
    /// same producer sending `n` before `n + 1` (`n + 1` is handed to `n`'s producer,
    /// not to whichever is current: see [`Publisher::enqueue`]). A batch some of whose rows were not
    /// handed to the producer (one was refused) is never pipelined: it is finished
    /// before the next read, which then starts again from the rows it left.
    ///
    /// Returns [`Run::Again`] as soon as the worker's share of the shards is no longer
    /// the one of `generation` (shards taken over, handed back or lost), so that new
    /// shards are read at once and not only when these run dry.
    async fn batches(
        &self,
        shards: &[i32],
        generation: u64,
        token: &CancellationToken,
    ) -> Result<Run, BatchError> {
        let mut in_flight: Option<Enqueued> = None;
        // At shutdown, one drain deadline for the whole pipeline.
        let mut drain = Drain::new(self.options.drain_timeout);
        loop {
            // Stop reading at shutdown, or when the share of shards changed (the batch
            // in flight is still finished).
            let reading = !token.is_cancelled() && self.shared.unchanged(self.index, generation);
            let read = if reading { Some(self.read(shards, in_flight.as_ref()).await) } else { None };
            let next = match read {
                Some(Ok((rows, full))) if !rows.is_empty() => {
                    let suspects = self.attempts.lock().unwrap_or_else(PoisonError::into_inner).suspects();
                    if rows.iter().any(|r| suspects.contains(&r.id)) {
                        // A suspect is sent alone: nothing may be pending beside it on
                        // the producer, so the batch in flight is finished first.
                        if let Some(batch) = in_flight.take() {
                            self.finish(batch, token, &mut drain).await?;
                        }
                    }
                    let enqueued = self
                        .publisher
                        .enqueue(&rows, in_flight.as_ref(), &suspects, token, drain.left(token))
                        .await;
                    Some((enqueued, full))
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
                Some((batch, true)) if !batch.incomplete() => in_flight = Some(batch),
                Some((batch, _)) => {
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
    /// of the batch `in_flight` and of the keys held back. Returns the rows in id order, and whether the read was
    /// full (more rows are probably waiting).
    async fn read(
        &self,
        shards: &[i32],
        in_flight: Option<&Enqueued>,
    ) -> Result<(Vec<OutboxRow>, bool), BatchError> {
        let produced: Vec<i64> =
            in_flight.map(|batch| batch.ids.iter().copied().collect()).unwrap_or_default();
        let held =
            self.held.lock().unwrap_or_else(PoisonError::into_inner).active(tokio::time::Instant::now());
        let rows = tokio::time::timeout(
            STATEMENT_TIMEOUT,
            self.store.read(shards, self.options.batch_size, &produced, &held),
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

    /// Waits for the acknowledgements of `batch`, clears the acknowledged rows, and
    /// counts an attempt of the row that made it fail, if its failure is the record's
    /// own, quarantining it after `quarantine_after` attempts.
    async fn finish(
        &self,
        batch: Enqueued,
        token: &CancellationToken,
        drain: &mut Drain,
    ) -> Result<(), BatchError> {
        let rows = batch.ids.len();
        let started = tokio::time::Instant::now();
        self.shared.publishing(self.index, true);
        let mut published = self.publisher.acknowledged(batch, token, drain.left(token)).await;
        self.shared.publishing(self.index, false);
        let failure = published.failure();
        self.shared.publish_outcome(failure.filter(|f| !f.is_record_error()).map(|f| crate::error_chain(f)));
        let acknowledged = started.elapsed();
        if !published.acked.is_empty() {
            self.attempts.lock().unwrap_or_else(PoisonError::into_inner).forget(&published.acked);
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
        let first = failure.map(|f| f.id());
        if !published.alone.is_empty() {
            self.attempts.lock().unwrap_or_else(PoisonError::into_inner).cleared(&published.alone);
        }
        let Some(first) = first else { return Ok(()) };
        // The failure to charge with an attempt: a refusal by the producer itself, or a
        // row the broker refused when sent alone, or the only row refused for a reason
        // of its own (a record batch the broker refuses fails every row in it with the
        // same error, so a single such failure was alone in its record batch).
        let failures = &published.failures;
        let record: Vec<usize> = (0..failures.len()).filter(|i| failures[*i].is_record_error()).collect();
        let charged = record
            .iter()
            .copied()
            .find(|i| failures[*i].is_local_refusal())
            .or_else(|| record.iter().copied().find(|i| published.alone.contains(&failures[*i].id())))
            .or_else(|| if record.len() == 1 { record.first().copied() } else { None });
        if let Some(index) = charged {
            let failure = published.failures.swap_remove(index);
            let (quarantined, held) = self.count_attempt(&failure).await?;
            return Err(BatchError::Publish { failure, quarantined, held, suspects: 0 });
        }
        // Several rows refused together: the error does not say which row is at fault.
        // None is charged; each is sent alone next (at once), where the broker's verdict
        // is its own.
        let suspects: Vec<i64> = record.iter().map(|i| failures[*i].id()).collect();
        let index = failures.iter().position(|f| f.id() == first).unwrap_or(0);
        let failure = published.failures.swap_remove(index);
        let count = suspects.len();
        if count > 0 {
            self.attempts.lock().unwrap_or_else(PoisonError::into_inner).suspect(suspects);
        }
        Err(BatchError::Publish { failure, quarantined: false, held: None, suspects: count })
    }

    /// Counts a failed attempt of the row of `failure` (the record's own fault). A row
    /// the producer refused before sending it for a reason it meets on every attempt
    /// ([`PublishError::is_local_refusal`]), or one that has had its attempts, is
    /// quarantined; any other has its key held back until its next attempt, with a
    /// backoff of its own (the other keys go on meanwhile). Returns whether it was
    /// quarantined, and for how long its key is held back.
    async fn count_attempt(&self, failure: &PublishError) -> Result<(bool, Option<Duration>), BatchError> {
        let id = failure.id();
        let attempts = self.attempts.lock().unwrap_or_else(PoisonError::into_inner).failed(id);
        if attempts < self.options.quarantine_after && !failure.is_local_refusal() {
            let delay = self.hold_delay(attempts);
            self.held
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .hold(failure.key(), tokio::time::Instant::now() + delay);
            return Ok((false, Some(delay)));
        }
        let reason = crate::error_chain(failure);
        let moved = tokio::time::timeout(STATEMENT_TIMEOUT, self.store.quarantine(id, attempts, &reason))
            .await
            .map_err(|_| BatchError::Timeout("quarantine"))?
            .map_err(|error| BatchError::Quarantine { id, error })?;
        self.attempts.lock().unwrap_or_else(PoisonError::into_inner).forget(&[id]);
        if moved {
            metrics::counter!(metric::QUARANTINED).increment(1);
            tracing::error!(
                worker = self.index,
                row = id,
                attempts,
                reason,
                "outbox row quarantined: it cannot be published as it is; the later rows of its key \
                 wait until it is re-queued or discarded"
            );
        }
        Ok((moved, None))
    }

    /// How long a row's key is held back after its `attempts`-th failed attempt:
    /// `retry_backoff_min` doubled per attempt, at most `retry_backoff_max`.
    fn hold_delay(&self, attempts: u32) -> Duration {
        let (min, max) = (self.options.retry_backoff_min, self.options.retry_backoff_max);
        min.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(max.max(min))
    }
}
