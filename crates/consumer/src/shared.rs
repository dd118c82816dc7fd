//! State shared by the poll thread (which runs the rebalance callbacks) and the tasks
//! that handle records: per assigned partition, its epoch, its offsets and how many of
//! its records are being handled.
//!
//! An *epoch* is given to a partition each time it is assigned; a record carries the
//! epoch it was received in, and whatever is done under an older epoch (a completion
//! after the partition was revoked, a record received before) is ignored, as Confluent's
//! Parallel Consumer does. On revocation the callback waits (bounded) until no record of
//! the revoked partitions is being handled, commits their done prefix synchronously,
//! inside the callback as librdkafka requires, and forgets them.

use std::{
    collections::HashMap,
    sync::{Condvar, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use rdkafka::{Offset, TopicPartitionList};

use crate::offsets::PartitionOffsets;

/// A partition of a topic.
pub(crate) type TopicPartition = (String, i32);

#[derive(Debug, Default)]
struct Partition {
    epoch: u64,
    offsets: PartitionOffsets,
    running: usize,
    revoking: bool,
}

#[derive(Debug, Default)]
struct State {
    partitions: HashMap<TopicPartition, Partition>,
    epochs: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Notified whenever a record's handling ends.
    ended: Condvar,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The partitions were assigned: each gets a new epoch and empty offsets.
    pub(crate) fn assigned(&self, partitions: &[TopicPartition]) {
        let mut state = self.state();
        for partition in partitions {
            state.epochs += 1;
            let epoch = state.epochs;
            state.partitions.insert(partition.clone(), Partition { epoch, ..Partition::default() });
        }
    }

    /// The current epoch of `partition`; `None` when it is not assigned or is being
    /// revoked.
    pub(crate) fn epoch(&self, topic: &str, partition: i32) -> Option<u64> {
        let state = self.state();
        state.partitions.get(&(topic.to_string(), partition)).filter(|p| !p.revoking).map(|p| p.epoch)
    }

    /// Takes `offset` for handling under `epoch`: `false` when the epoch is stale or the
    /// offset was taken already (redelivered).
    pub(crate) fn take(&self, topic: &str, partition: i32, epoch: u64, offset: i64) -> bool {
        let mut state = self.state();
        match state.partitions.get_mut(&(topic.to_string(), partition)) {
            Some(p) if p.epoch == epoch && !p.revoking => p.offsets.take(offset),
            _ => false,
        }
    }

    /// A record of `partition` starts being handled under `epoch`: `false` (do not
    /// start it) when the epoch is stale or the partition is being revoked.
    pub(crate) fn start(&self, topic: &str, partition: i32, epoch: u64) -> bool {
        let mut state = self.state();
        match state.partitions.get_mut(&(topic.to_string(), partition)) {
            Some(p) if p.epoch == epoch && !p.revoking => {
                p.running += 1;
                true
            }
            _ => false,
        }
    }

    /// A record's handling ended; `done`: its offset may be committed past (handled,
    /// parked, dead-lettered), else it is to be handled again (a retry, a shutdown).
    pub(crate) fn ended(&self, topic: &str, partition: i32, epoch: u64, offset: i64, done: bool) {
        let mut state = self.state();
        if let Some(p) = state.partitions.get_mut(&(topic.to_string(), partition))
            && p.epoch == epoch
        {
            p.running = p.running.saturating_sub(1);
            if done {
                p.offsets.done(offset);
            }
        }
        drop(state);
        self.ended.notify_all();
    }

    /// The positions that moved since they were last handed out, of the partitions not
    /// being revoked.
    pub(crate) fn commit_due(&self) -> TopicPartitionList {
        let mut state = self.state();
        let mut list = TopicPartitionList::new();
        for ((topic, partition), p) in &mut state.partitions {
            if p.revoking {
                continue;
            }
            if let Some(position) = p.offsets.commit_due() {
                let _ = list.add_partition_offset(topic, *partition, Offset::Offset(position));
            }
        }
        list
    }

    /// Every assigned partition's position (for the last commit at shutdown).
    pub(crate) fn positions(&self) -> TopicPartitionList {
        let state = self.state();
        let mut list = TopicPartitionList::new();
        for ((topic, partition), p) in &state.partitions {
            if let Some(position) = p.offsets.position() {
                let _ = list.add_partition_offset(topic, *partition, Offset::Offset(position));
            }
        }
        list
    }

    /// Marks `partitions` as being revoked (nothing new of them starts), waits until
    /// none of their records is being handled or `timeout` passed, forgets them and
    /// returns their positions to commit, and how many records were still running.
    pub(crate) fn revoke(
        &self,
        partitions: &[TopicPartition],
        timeout: Duration,
    ) -> (TopicPartitionList, usize) {
        let deadline = Instant::now() + timeout;
        let mut state = self.state();
        for partition in partitions {
            if let Some(p) = state.partitions.get_mut(partition) {
                p.revoking = true;
            }
        }
        let running = |state: &State| -> usize {
            partitions.iter().filter_map(|p| state.partitions.get(p)).map(|p| p.running).sum()
        };
        while running(&state) > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            state = self.ended.wait_timeout(state, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        let abandoned = running(&state);
        let mut list = TopicPartitionList::new();
        for partition in partitions {
            if let Some(p) = state.partitions.remove(partition)
                && let Some(position) = p.offsets.position()
            {
                let _ = list.add_partition_offset(&partition.0, partition.1, Offset::Offset(position));
            }
        }
        (list, abandoned)
    }

    /// Records taken and not done, over all partitions.
    #[cfg(test)]
    pub(crate) fn unfinished(&self) -> usize {
        self.state().partitions.values().map(|p| p.offsets.unfinished()).sum()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn tp(partition: i32) -> TopicPartition {
        ("t".to_string(), partition)
    }

    #[test]
    fn work_of_an_old_epoch_is_ignored() {
        let shared = Shared::default();
        shared.assigned(&[tp(0)]);
        let old = shared.epoch("t", 0).expect("assigned");
        assert!(shared.take("t", 0, old, 5));
        assert!(shared.start("t", 0, old));
        let (_, abandoned) = shared.revoke(&[tp(0)], Duration::ZERO);
        assert_eq!(abandoned, 1);
        shared.assigned(&[tp(0)]);
        let new = shared.epoch("t", 0).expect("assigned again");
        assert_ne!(old, new);
        shared.ended("t", 0, old, 5, true);
        assert!(!shared.take("t", 0, old, 6), "a record of the old epoch");
        assert!(shared.take("t", 0, new, 5), "the new owner handles 5 again");
        assert_eq!(shared.commit_due().count(), 1);
        assert_eq!(shared.unfinished(), 1, "the old completion did not count");
    }

    #[test]
    fn a_revocation_waits_for_running_records_and_commits_their_prefix() {
        let shared = Arc::new(Shared::default());
        shared.assigned(&[tp(0), tp(1)]);
        let epoch = shared.epoch("t", 0).expect("assigned");
        for offset in 0..3 {
            assert!(shared.take("t", 0, epoch, offset));
        }
        assert!(shared.start("t", 0, epoch));
        shared.ended("t", 0, epoch, 0, true);
        assert!(shared.start("t", 0, epoch));
        let finisher = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                shared.ended("t", 0, epoch, 1, true);
            })
        };
        let (list, abandoned) = shared.revoke(&[tp(0)], Duration::from_secs(30));
        finisher.join().expect("joined");
        assert_eq!(abandoned, 0);
        let element = list.find_partition("t", 0).expect("committed");
        assert_eq!(element.offset(), Offset::Offset(2), "2 was never handled");
        assert!(shared.epoch("t", 0).is_none());
        assert!(shared.epoch("t", 1).is_some(), "the other partition stays");
    }
}
