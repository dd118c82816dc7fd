//! Key-ordered scheduling: which record may be handled next.
//!
//! Records are queued per key (a *shard*, as Confluent's Parallel Consumer calls it):
//! a shard has at most one record in flight, so one key's records are handled strictly
//! in the order they arrived, while the records of different keys run concurrently. A
//! record whose handling failed for a transient reason goes back to the front of its
//! shard and is not ready again before its retry time: that key waits, every other key
//! goes on.
//!
//! The scheduler is pure bookkeeping (no I/O, no clock of its own): the consumer loop
//! asks it for ready records while it has room for more in flight, and tells it how
//! each one ended.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    hash::Hash,
    time::Instant,
};

#[derive(Debug)]
struct Shard<T> {
    queue: VecDeque<T>,
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the ready queue (its head can start).
    Ready,
    /// Its head is being handled.
    Running,
    /// Its head waits for its retry time.
    Delayed(Instant),
}

/// Per-key FIFO queues with at most one record in flight per key.
#[derive(Debug)]
pub(crate) struct Scheduler<K, T> {
    shards: HashMap<K, Shard<T>>,
    /// Keys whose head may start, in the order they became ready (fair across keys).
    ready: VecDeque<K>,
    /// Keys waiting for a retry, by retry time (the `u64` breaks ties).
    delayed: BTreeMap<(Instant, u64), K>,
    sequence: u64,
    running: usize,
    queued: usize,
}

impl<K, T> Default for Scheduler<K, T> {
    fn default() -> Self {
        Self {
            shards: HashMap::new(),
            ready: VecDeque::new(),
            delayed: BTreeMap::new(),
            sequence: 0,
            running: 0,
            queued: 0,
        }
    }
}

impl<K: Hash + Eq + Clone, T> Scheduler<K, T> {
    /// Queues `item` behind the other records of `key`.
    pub(crate) fn push(&mut self, key: K, item: T) {
        self.queued += 1;
        match self.shards.get_mut(&key) {
            Some(shard) => shard.queue.push_back(item),
            None => {
                self.shards.insert(key.clone(), Shard { queue: VecDeque::from([item]), state: State::Ready });
                self.ready.push_back(key);
            }
        }
    }

    /// The next record that may start now (its key's head, its key now running), after
    /// moving the keys whose retry time has come to the ready queue.
    pub(crate) fn next(&mut self, now: Instant) -> Option<(K, T)> {
        self.promote(now);
        while let Some(key) = self.ready.pop_front() {
            let Some(shard) = self.shards.get_mut(&key) else { continue };
            let Some(item) = shard.queue.pop_front() else { continue };
            shard.state = State::Running;
            self.queued -= 1;
            self.running += 1;
            return Some((key, item));
        }
        None
    }

    /// The running record of `key` is done: the key's next record, if any, is ready.
    pub(crate) fn finish(&mut self, key: &K) {
        let Some(shard) = self.shards.get_mut(key) else { return };
        if shard.state != State::Running {
            return;
        }
        self.running -= 1;
        if shard.queue.is_empty() {
            self.shards.remove(key);
        } else {
            shard.state = State::Ready;
            self.ready.push_back(key.clone());
        }
    }

    /// The running record of `key` is to be tried again at `at`: it goes back to the
    /// front of its key's queue, and the key waits until then.
    pub(crate) fn retry(&mut self, key: &K, item: T, at: Instant) {
        let Some(shard) = self.shards.get_mut(key) else { return };
        if shard.state != State::Running {
            return;
        }
        self.running -= 1;
        self.queued += 1;
        shard.queue.push_front(item);
        shard.state = State::Delayed(at);
        self.sequence += 1;
        self.delayed.insert((at, self.sequence), key.clone());
    }

    /// Removes the keys `drop` selects (their partition was revoked): their queued
    /// records are returned, and a running one's later [`Scheduler::finish`] or
    /// [`Scheduler::retry`] is ignored.
    pub(crate) fn remove_keys(&mut self, mut drop: impl FnMut(&K) -> bool) -> Vec<T> {
        let keys: Vec<K> = self.shards.keys().filter(|k| drop(k)).cloned().collect();
        let mut removed = Vec::new();
        for key in keys {
            if let Some(shard) = self.shards.remove(&key) {
                if shard.state == State::Running {
                    self.running -= 1;
                }
                self.queued -= shard.queue.len();
                removed.extend(shard.queue);
            }
        }
        self.ready.retain(|k| !drop(k));
        self.delayed.retain(|_, k| !drop(k));
        removed
    }

    /// When the earliest delayed key becomes ready.
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        self.delayed.keys().next().map(|(at, _)| *at)
    }

    /// Records in flight.
    pub(crate) fn running(&self) -> usize {
        self.running
    }

    /// Records waiting (ready, behind a running one, or delayed).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// Keys waiting for a retry.
    pub(crate) fn retrying(&self) -> usize {
        self.delayed.len()
    }

    fn promote(&mut self, now: Instant) {
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            if let Some(shard) = self.shards.get_mut(&key) {
                shard.state = State::Ready;
                self.ready.push_back(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn one_record_per_key_in_flight_and_keys_run_side_by_side() {
        let now = Instant::now();
        let mut s = Scheduler::default();
        s.push("a", 1);
        s.push("a", 2);
        s.push("b", 1);
        assert_eq!(s.next(now), Some(("a", 1)));
        assert_eq!(s.next(now), Some(("b", 1)), "a's second waits for its first");
        assert_eq!(s.next(now), None);
        assert_eq!((s.running(), s.queued()), (2, 1));
        s.finish(&"a");
        assert_eq!(s.next(now), Some(("a", 2)));
        s.finish(&"a");
        s.finish(&"b");
        assert_eq!((s.running(), s.queued()), (0, 0));
    }

    #[test]
    fn a_retry_holds_back_only_its_key_until_its_time() {
        let now = Instant::now();
        let mut s = Scheduler::default();
        s.push("a", 1);
        s.push("a", 2);
        s.push("b", 1);
        s.push("b", 2);
        let (key, item) = s.next(now).unwrap_or_else(|| unreachable!());
        s.retry(&key, item, now + Duration::from_secs(1));
        assert_eq!(s.next(now), Some(("b", 1)));
        s.finish(&"b");
        assert_eq!(s.next(now), Some(("b", 2)), "b goes on while a waits");
        assert_eq!(s.next(now), None);
        assert_eq!(s.next_retry(), Some(now + Duration::from_secs(1)));
        assert_eq!(s.next(now + Duration::from_secs(1)), Some(("a", 1)), "the same record again, first");
        s.finish(&"a");
        assert_eq!(s.next(now + Duration::from_secs(1)), Some(("a", 2)));
    }

    #[test]
    fn removed_keys_give_back_their_queue_and_ignore_late_completions() {
        let now = Instant::now();
        let mut s = Scheduler::default();
        s.push((0, "a"), 1);
        s.push((0, "a"), 2);
        s.push((1, "b"), 1);
        assert_eq!(s.next(now), Some(((0, "a"), 1)));
        assert_eq!(s.remove_keys(|(partition, _)| *partition == 0), vec![2]);
        s.finish(&(0, "a"));
        assert_eq!((s.running(), s.queued()), (0, 1));
        assert_eq!(s.next(now), Some(((1, "b"), 1)));
    }

    proptest! {
        /// Whatever the interleaving of completions and retries, each key's records
        /// complete in the order they were pushed, and never two of a key at once.
        #[test]
        fn each_key_completes_in_push_order(
            pushes in proptest::collection::vec(0u8..5, 1..60),
            choices in proptest::collection::vec((any::<usize>(), any::<bool>()), 200),
        ) {
            let now = Instant::now();
            let mut s = Scheduler::default();
            for (i, key) in pushes.iter().enumerate() {
                s.push(*key, i);
            }
            let mut running: Vec<(u8, usize)> = Vec::new();
            let mut completed: HashMap<u8, Vec<usize>> = HashMap::new();
            let mut choices = choices.into_iter();
            while s.running() + s.queued() > 0 {
                while let Some((key, item)) = s.next(now) {
                    prop_assert!(running.iter().all(|(k, _)| *k != key), "two of key {} at once", key);
                    running.push((key, item));
                }
                let (index, fail) = choices.next().unwrap_or((0, false));
                let (key, item) = running.remove(index % running.len());
                if fail {
                    s.retry(&key, item, now);
                } else {
                    completed.entry(key).or_default().push(item);
                    s.finish(&key);
                }
            }
            for (key, items) in completed {
                let pushed: Vec<usize> = pushes.iter().enumerate().filter(|(_, k)| **k == key).map(|(i, _)| i).collect();
                prop_assert_eq!(items, pushed);
            }
        }
    }
}
