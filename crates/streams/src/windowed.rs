//! The windowed aggregates of one task (one input partition): its stream time, the
//! values of its open windows, which of them changed since they were last emitted, and
//! the changelog of what changed.
//!
//! Time comes in as arguments, never from a clock of its own: event time with each
//! record, processing time (`now_ms`) when asking what to emit. Tests control both.

use std::{collections::BTreeMap, time::Duration};

use crate::window::{Window, Windows};

/// A record's effect on the windows it falls in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Added {
    /// The open windows it updated.
    pub updated: Vec<Window>,
    /// The windows it falls in that were already closed: it was not counted there.
    pub late: Vec<Window>,
}

impl Added {
    /// Whether it was late for every window it falls in (it changed nothing).
    pub fn is_late(&self) -> bool {
        self.updated.is_empty() && !self.late.is_empty()
    }
}

/// A window's value to send downstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted<K, A> {
    /// The aggregate's key.
    pub key: K,
    /// Its window.
    pub window: Window,
    /// Its value.
    pub value: A,
    /// Whether the window is closed: this is the last value it will have.
    pub is_final: bool,
}

/// One change to the store, as its changelog records it: replaying the changes in
/// order rebuilds the store ([`WindowStore::restore`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<K, A> {
    /// A window's value now; `None` once it closed and was evicted (a tombstone).
    Window {
        /// The aggregate's key.
        key: K,
        /// Its window.
        window: Window,
        /// Its value, or `None` when evicted.
        value: Option<A>,
    },
    /// The task's stream time now.
    StreamTime(i64),
}

#[derive(Debug, Clone)]
struct Entry<A> {
    value: A,
    /// Changed since it was last emitted.
    dirty: bool,
    /// When (processing time) it was last emitted.
    last_emitted_ms: Option<i64>,
}

/// The windowed aggregates of one task.
///
/// - [`add`](Self::add) advances stream time to the record's timestamp (if later) and
///   updates each window the record falls in that is still open; the closed ones are
///   reported as late, never merged into another window.
/// - [`updates_due`](Self::updates_due) gives the changed windows whose key and window
///   were last emitted at least the emit interval ago (Kafka Streams' record cache
///   does the same job: one update per window and interval, not one per record).
/// - [`close`](Self::close) gives the final value of each window that stream time has
///   closed, and evicts it; [`punctuate`](Self::punctuate) does the same by wall-clock
///   time for partitions whose stream time stands still.
/// - [`take_changes`](Self::take_changes) gives what changed since the last call, the
///   latest change per window: the changelog records to write in the same transaction
///   as the output.
#[derive(Debug, Clone)]
pub struct WindowStore<K, A> {
    windows: Windows,
    emit_interval_ms: i64,
    stream_time_ms: Option<i64>,
    /// Open windows by (close time, window, key): the next to close come first.
    entries: BTreeMap<(i64, Window, K), Entry<A>>,
    /// Changes not taken yet, latest per (window, key).
    changes: BTreeMap<(Window, K), Option<A>>,
    stream_time_changed: bool,
}

impl<K: Ord + Clone, A: Clone + Default> WindowStore<K, A> {
    /// An empty store of `windows`, emitting a changed window at most once per
    /// `emit_interval` (zero: on every change).
    pub fn new(windows: Windows, emit_interval: Duration) -> Self {
        Self {
            windows,
            emit_interval_ms: i64::try_from(emit_interval.as_millis()).unwrap_or(i64::MAX),
            stream_time_ms: None,
            entries: BTreeMap::new(),
            changes: BTreeMap::new(),
            stream_time_changed: false,
        }
    }

    /// The windows it aggregates over.
    pub fn windows(&self) -> &Windows {
        &self.windows
    }

    /// The largest timestamp seen (or set by [`punctuate`](Self::punctuate)).
    pub fn stream_time_ms(&self) -> Option<i64> {
        self.stream_time_ms
    }

    /// How many windows are open.
    pub fn open_windows(&self) -> usize {
        self.entries.len()
    }

    /// The value of `key` in `window`, when that window is open.
    pub fn get(&self, key: &K, window: &Window) -> Option<&A> {
        let close = self.windows.close_time(window);
        self.entries.get(&(close, *window, key.clone())).map(|entry| &entry.value)
    }

    fn advance(&mut self, ts_ms: i64) {
        if self.stream_time_ms.is_none_or(|now| ts_ms > now) {
            self.stream_time_ms = Some(ts_ms);
            self.stream_time_changed = true;
        }
    }

    /// Applies a record of `key` at event time `ts_ms`: `update` runs on the value of
    /// each open window it falls in (a new window starts from `A::default()`).
    pub fn add(&mut self, key: &K, ts_ms: i64, mut update: impl FnMut(&mut A)) -> Added {
        self.advance(ts_ms);
        let stream_time = self.stream_time_ms.unwrap_or(ts_ms);
        let mut added = Added::default();
        for window in self.windows.windows_of(ts_ms) {
            if self.windows.is_closed(&window, stream_time) {
                added.late.push(window);
                continue;
            }
            let close = self.windows.close_time(&window);
            let entry = self.entries.entry((close, window, key.clone())).or_insert_with(|| Entry {
                value: A::default(),
                dirty: false,
                last_emitted_ms: None,
            });
            update(&mut entry.value);
            entry.dirty = true;
            self.changes.insert((window, key.clone()), Some(entry.value.clone()));
            added.updated.push(window);
        }
        added
    }

    /// The changed windows due for an update at processing time `now_ms`: those not
    /// emitted yet, or last emitted at least the emit interval ago. They count as
    /// emitted from now on.
    pub fn updates_due(&mut self, now_ms: i64) -> Vec<Emitted<K, A>> {
        let interval = self.emit_interval_ms;
        self.entries
            .iter_mut()
            .filter(|(_, entry)| {
                entry.dirty
                    && entry.last_emitted_ms.is_none_or(|last| now_ms.saturating_sub(last) >= interval)
            })
            .map(|((_, window, key), entry)| {
                entry.dirty = false;
                entry.last_emitted_ms = Some(now_ms);
                Emitted { key: key.clone(), window: *window, value: entry.value.clone(), is_final: false }
            })
            .collect()
    }

    /// The final value of every window that stream time has closed, oldest close time
    /// first; they are evicted (their changelog records become tombstones).
    pub fn close(&mut self) -> Vec<Emitted<K, A>> {
        let Some(stream_time) = self.stream_time_ms else { return Vec::new() };
        let mut closed = Vec::new();
        while let Some(entry) = self.entries.first_entry() {
            let (close, window, _) = entry.key();
            if *close > stream_time {
                break;
            }
            let window = *window;
            let ((_, _, key), entry) = entry.remove_entry();
            self.changes.insert((window, key.clone()), None);
            closed.push(Emitted { key, window, value: entry.value, is_final: true });
        }
        closed
    }

    /// Wall-clock punctuation: stream time moves up to `wall_ms` (if later), then the
    /// windows it closes are closed as by [`close`](Self::close). For a partition that
    /// stopped receiving records, whose stream time would otherwise stand still and
    /// never close its windows (Kafka Streams leaves them open). The price of the
    /// choice: a record whose event time lags the wall clock by more than the grace
    /// period is late from then on.
    pub fn punctuate(&mut self, wall_ms: i64) -> Vec<Emitted<K, A>> {
        self.advance(wall_ms);
        self.close()
    }

    /// What changed since the last call, the latest change per window, then the stream
    /// time if it moved: the changelog records to write with the output.
    pub fn take_changes(&mut self) -> Vec<Change<K, A>> {
        let mut changes: Vec<Change<K, A>> = std::mem::take(&mut self.changes)
            .into_iter()
            .map(|((window, key), value)| Change::Window { key, window, value })
            .collect();
        if std::mem::take(&mut self.stream_time_changed)
            && let Some(ts) = self.stream_time_ms
        {
            changes.push(Change::StreamTime(ts));
        }
        changes
    }

    /// Applies one changelog record while restoring (before processing resumes).
    /// Restored windows count as changed and not yet emitted: the next
    /// [`updates_due`](Self::updates_due) sends them again (a repeat of a value the
    /// output may already hold, never a lost one).
    pub fn restore(&mut self, change: Change<K, A>) {
        match change {
            Change::StreamTime(ts) => {
                self.stream_time_ms = Some(self.stream_time_ms.map_or(ts, |now| now.max(ts)));
            }
            Change::Window { key, window, value } => {
                let entry_key = (self.windows.close_time(&window), window, key);
                match value {
                    Some(value) => {
                        self.entries.insert(entry_key, Entry { value, dirty: true, last_emitted_ms: None });
                    }
                    None => {
                        self.entries.remove(&entry_key);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Against a model computed independently: a record counts in its window iff
        /// that window's end plus grace is after the largest timestamp seen so far
        /// (itself included). Every window is emitted final once with the model's
        /// value, also when the store is rebuilt from its changelog halfway.
        #[test]
        fn finals_match_an_independent_model_across_a_restore(
            records in proptest::collection::vec((0u8..4, 0i64..200, 1i64..100), 1..200),
            restore_at in 0usize..200,
        ) {
            let (size, grace) = (20i64, 7i64);
            let windows = Windows::tumbling(Duration::from_millis(20)).unwrap().with_grace(Duration::from_millis(7));
            let mut model: HashMap<(u8, i64), i64> = HashMap::new();
            let mut max_seen = i64::MIN;
            for (key, ts, amount) in &records {
                max_seen = max_seen.max(*ts);
                let start = ts - ts.rem_euclid(size);
                if start + size + grace > max_seen {
                    *model.entry((*key, start)).or_default() += amount;
                }
            }

            let mut store: WindowStore<u8, i64> = WindowStore::new(windows, Duration::ZERO);
            let mut changelog = Vec::new();
            let mut finals: HashMap<(u8, i64), i64> = HashMap::new();
            for (i, (key, ts, amount)) in records.iter().enumerate() {
                if i == restore_at {
                    // A crash: everything since the last changelog write is lost with
                    // the input position, so the store is rebuilt and goes on.
                    let mut rebuilt = WindowStore::new(windows, Duration::ZERO);
                    for change in changelog.iter().cloned() {
                        rebuilt.restore(change);
                    }
                    store = rebuilt;
                }
                store.add(key, *ts, |total| *total += amount);
                for emitted in store.close() {
                    let previous = finals.insert((emitted.key, emitted.window.start_ms), emitted.value);
                    prop_assert!(previous.is_none(), "a window emitted final twice");
                }
                changelog.extend(store.take_changes());
            }
            for emitted in store.punctuate(i64::MAX) {
                let previous = finals.insert((emitted.key, emitted.window.start_ms), emitted.value);
                prop_assert!(previous.is_none(), "a window emitted final twice");
            }
            prop_assert_eq!(finals, model);
        }
    }

    fn store(size_ms: u64, grace_ms: u64, emit_ms: u64) -> WindowStore<&'static str, i64> {
        let windows = Windows::tumbling(Duration::from_millis(size_ms))
            .unwrap()
            .with_grace(Duration::from_millis(grace_ms));
        WindowStore::new(windows, Duration::from_millis(emit_ms))
    }

    fn w(start_ms: i64, end_ms: i64) -> Window {
        Window { start_ms, end_ms }
    }

    #[test]
    fn records_update_their_window_and_late_ones_are_refused() {
        let mut store = store(10, 5, 0);
        assert_eq!(store.add(&"alice", 3, |v| *v += 1).updated, vec![w(0, 10)]);
        assert_eq!(store.add(&"alice", 12, |v| *v += 1).updated, vec![w(10, 20)]);
        // Within grace: stream time 12 < 10 + 5.
        assert_eq!(store.add(&"alice", 9, |v| *v += 1).updated, vec![w(0, 10)]);
        assert_eq!(store.get(&"alice", &w(0, 10)), Some(&2));
        // Stream time 15 closes [0, 10); a record for it is late, counted nowhere.
        store.add(&"bob", 15, |v| *v += 1);
        let late = store.add(&"alice", 8, |v| *v += 100);
        assert!(late.is_late(), "{late:?}");
        assert_eq!(late.late, vec![w(0, 10)]);
        assert_eq!(store.get(&"alice", &w(10, 20)), Some(&1));
    }

    #[test]
    fn closing_emits_each_window_once_as_final_and_evicts_it() {
        let mut store = store(10, 5, 0);
        store.add(&"alice", 1, |v| *v += 1);
        store.add(&"bob", 2, |v| *v += 1);
        store.add(&"alice", 14, |v| *v += 1);
        assert!(store.close().is_empty(), "stream time 14 < 15");
        store.add(&"carol", 15, |v| *v += 1);
        let closed = store.close();
        assert_eq!(closed.len(), 2);
        assert!(closed.iter().all(|e| e.is_final && e.window == w(0, 10) && e.value == 1));
        assert_eq!(store.open_windows(), 2, "alice and carol in [10, 20)");
        assert!(store.close().is_empty(), "closed once");
    }

    #[test]
    fn updates_are_rate_limited_per_window() {
        let mut store = store(1_000, 0, 100);
        store.add(&"alice", 1, |v| *v += 1);
        assert_eq!(store.updates_due(0).len(), 1);
        store.add(&"alice", 2, |v| *v += 1);
        store.add(&"alice", 3, |v| *v += 1);
        assert!(store.updates_due(50).is_empty(), "emitted 50 ms ago");
        let due = store.updates_due(100);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].value, due[0].is_final), (3, false));
        assert!(store.updates_due(500).is_empty(), "nothing changed since");
    }

    #[test]
    fn punctuation_closes_windows_of_an_idle_task_by_wall_clock() {
        let mut store = store(10, 5, 0);
        store.add(&"alice", 1, |v| *v += 1);
        assert!(store.punctuate(14).is_empty());
        let closed = store.punctuate(15);
        assert_eq!(closed.len(), 1);
        assert!(closed[0].is_final);
        // Stream time moved with the wall clock: a record for the closed window is late.
        assert!(store.add(&"alice", 2, |v| *v += 1).is_late());
    }

    #[test]
    fn the_changelog_restores_the_store() {
        let mut store = store(10, 5, 0);
        let mut changelog = Vec::new();
        store.add(&"alice", 1, |v| *v += 1);
        store.add(&"alice", 2, |v| *v += 1);
        store.add(&"bob", 12, |v| *v += 7);
        changelog.extend(store.take_changes());
        assert_eq!(changelog.len(), 3, "latest per window, then stream time: {changelog:?}");
        store.add(&"bob", 20, |v| *v += 1);
        store.close();
        changelog.extend(store.take_changes());
        assert!(changelog.contains(&Change::Window { key: "alice", window: w(0, 10), value: None }));

        let mut restored = self::store(10, 5, 0);
        for change in changelog {
            restored.restore(change);
        }
        assert_eq!(restored.stream_time_ms(), Some(20));
        assert_eq!(restored.open_windows(), store.open_windows());
        assert_eq!(restored.get(&"bob", &w(10, 20)), Some(&7));
        assert_eq!(restored.get(&"bob", &w(20, 30)), Some(&1));
        assert_eq!(restored.get(&"alice", &w(0, 10)), None, "evicted");
        // Restored windows are sent again, not lost.
        assert_eq!(restored.updates_due(0).len(), 2);
        // A late record stays late after the restore.
        assert!(restored.add(&"alice", 3, |v| *v += 1).is_late());
    }

    #[test]
    fn hopping_windows_count_a_record_in_each_and_close_in_order() {
        let windows = Windows::hopping(Duration::from_millis(10), Duration::from_millis(5)).unwrap();
        let mut store: WindowStore<&str, i64> = WindowStore::new(windows, Duration::ZERO);
        assert_eq!(store.add(&"alice", 7, |v| *v += 1).updated, vec![w(0, 10), w(5, 15)]);
        store.add(&"alice", 10, |v| *v += 1);
        let closed: Vec<Window> = store.close().into_iter().map(|e| e.window).collect();
        assert_eq!(closed, vec![w(0, 10)]);
        // [5, 15) is open and [0, 10) is closed: a record at 8 counts in one of its two.
        let added = store.add(&"alice", 8, |v| *v += 1);
        assert_eq!((added.updated, added.late), (vec![w(5, 15)], vec![w(0, 10)]));
    }
}
