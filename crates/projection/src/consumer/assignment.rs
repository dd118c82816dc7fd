//! The loop's side of partition assignment: applying the changes the rebalance callback
//! queued (forgetting revoked partitions, reading the stored positions of assigned
//! ones), rewinding, and the seeks to the positions, which run on a blocking thread.

use std::{
    collections::BTreeMap,
    sync::{Arc, PoisonError},
    time::Duration,
};

use rdkafka::{Offset, consumer::Consumer as _};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::Projection;
use crate::{Handler, Result, context::Change, state::PartitionState};

/// The longest a seek may wait for librdkafka's fetcher (on a blocking thread).
const SEEK_TIMEOUT: Duration = Duration::from_millis(500);

/// The seeks started together on a blocking thread: for each, the partition, its state
/// generation, the offset, and whether it was done.
pub(super) type Seeks = Vec<(i32, u64, Offset, bool)>;

impl<H: Handler> Projection<H> {
    /// Applies the queued assignment changes and reloads: forgets revoked partitions,
    /// reads the stored positions of (re)assigned ones and schedules a seek to them.
    /// Returns `false` when shutdown interrupted it.
    pub(super) async fn handle_changes(&mut self, token: &CancellationToken) -> Result<bool> {
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
                        self.rates.forget(partition);
                    }
                }
            }
        }
        // A partition with a batch in flight is reloaded once the batch has finished.
        let due: Vec<i32> = self.reload.iter().copied().filter(|p| !self.busy.contains(p)).collect();
        if due.is_empty() {
            return Ok(true);
        }
        let mut delays = crate::backoff();
        let stored = loop {
            let delay = delays.next().unwrap_or(Duration::from_secs(10));
            match self.load_positions().await {
                Ok(stored) => break stored,
                Err(e) => warn!(error = %e, retry_in = ?delay, "reading stored positions failed; retrying"),
            }
            tokio::select! {
                () = token.cancelled() => return Ok(false),
                () = tokio::time::sleep(delay) => {}
            }
        };
        for partition in due {
            self.reload.remove(&partition);
            let position = stored.get(&partition).copied();
            let seek = Some(position.map_or(Offset::Beginning, Offset::Offset));
            info!(projection = %self.shared.settings.name, partition, ?position, "partition assigned; seeking to its stored position");
            self.generation += 1;
            self.partitions.insert(partition, PartitionState::new(position, seek, self.generation));
        }
        Ok(true)
    }

    /// Records of `partitions` were polled but will not be applied: drop them, and send
    /// the fetcher back to the positions before the next batch.
    pub(super) fn rewind(&mut self, partitions: Vec<i32>) {
        for partition in partitions {
            if let Some(state) = self.partitions.get_mut(&partition) {
                state.rewind();
            }
        }
    }

    async fn load_positions(&self) -> Result<BTreeMap<i32, i64>> {
        let client = self.shared.pool.get().await?;
        self.shared.positions.load(&client).await
    }

    /// Starts every pending seek (of partitions without a batch in flight: their batch
    /// decides the position first) on a blocking thread, unless seeks are running.
    /// librdkafka refuses to seek a partition whose fetcher has not started yet (just
    /// after assignment); those stay pending and are tried again next turn.
    pub(super) fn start_seeks(&self, seeking: &mut Option<JoinHandle<Seeks>>) {
        if seeking.is_some() {
            return;
        }
        let due: Vec<(i32, u64, Offset)> = self
            .partitions
            .iter()
            .filter(|(p, _)| !self.busy.contains(p))
            .filter_map(|(p, s)| s.seek.map(|offset| (*p, s.generation, offset)))
            .collect();
        if due.is_empty() {
            return;
        }
        let consumer = Arc::clone(&self.consumer);
        let topic = self.shared.settings.topic.clone();
        *seeking = Some(tokio::task::spawn_blocking(move || {
            due.into_iter()
                .map(|(partition, generation, offset)| {
                    let done = match consumer.seek(&topic, partition, offset, SEEK_TIMEOUT) {
                        Ok(()) => true,
                        Err(e) => {
                            debug!(partition, ?offset, error = %e, "seek not possible yet; retrying");
                            false
                        }
                    };
                    (partition, generation, offset, done)
                })
                .collect()
        }));
    }

    /// Records which seeks are done. Records still pending are before the offset sought:
    /// they stay.
    pub(super) fn sought(&mut self, seeks: Seeks) {
        for (partition, generation, offset, done) in seeks {
            if let Some(state) = self.partitions.get_mut(&partition)
                && done
                && state.generation == generation
            {
                debug!(partition, ?offset, "seek done");
                state.sought(offset);
            }
        }
    }
}

/// The seeks' outcome, once `seeking` finished (pending forever without seeks, so that a
/// `select!` branch guarded by `seeking.is_some()` never sees `None`).
pub(super) async fn sought(seeking: &mut Option<JoinHandle<Seeks>>) -> Seeks {
    match seeking {
        // A panicked seek task leaves its seeks pending: tried again next turn.
        Some(task) => task.await.unwrap_or_default(),
        None => std::future::pending().await,
    }
}
