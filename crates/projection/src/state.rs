//! The state machine of the loop: what it knows of each assigned partition, how polled
//! records are filed, and how a batch and a run end.
//!
//! A partition is *seeking* (records dropped until the fetcher is at the position),
//! then *filing* records after its position into `pending`, from which the loop takes
//! batches; one batch at a time is in flight, and it ends [`Applied::Committed`] (the
//! position moves), [`Applied::Moved`] (reload the stored position and seek to it) or
//! [`Applied::Interrupted`] (shutdown; the same). Every reload makes a new `generation`,
//! so that the end of a batch launched for an older state changes nothing.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rdkafka::Offset;

use crate::Record;

/// How partitions are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A consumer group assigns them.
    Group,
    /// Every partition, without a group.
    All,
}

/// What the loop knows of one assigned partition.
#[derive(Debug, Clone)]
pub(crate) struct PartitionState {
    /// The position the next batch expects to find stored (`None`: nothing stored yet):
    /// with a batch in flight, the one that batch will commit.
    pub(crate) position: Option<i64>,
    /// The position last committed (or read at assignment).
    pub(crate) committed: Option<i64>,
    /// A seek still to be done; records are dropped until it is.
    pub(crate) seek: Option<Offset>,
    /// Whether the end of the partition was reached with nothing polled since.
    pub(crate) eof: bool,
    /// The offset after the last record polled: a floor for the partition's end between
    /// two statistics reports.
    pub(crate) polled_end: i64,
    /// Records polled and not yet in a batch, in offset order.
    pub(crate) pending: Vec<Record>,
    /// When the oldest pending record was polled.
    pub(crate) pending_since: Option<Instant>,
    /// Changes whenever the state is made anew (assignment, reload), so that the outcome
    /// of a batch launched for an older state is not taken for this one.
    pub(crate) generation: u64,
}

impl PartitionState {
    pub(crate) fn new(position: Option<i64>, seek: Option<Offset>, generation: u64) -> Self {
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

    /// Files a polled record (or drops it: before the position, while a seek is due, or
    /// at or past `target`, which schedules a seek back to where the next run starts).
    pub(crate) fn file(&mut self, record: Record, target: Option<Option<i64>>) {
        self.eof = false;
        self.polled_end = self.polled_end.max(record.offset + 1);
        let next = self.pending.last().map(|r| r.offset + 1).or(self.position);
        if self.seek.is_some() || next.is_some_and(|n| record.offset < n) {
            return; // before the position, or the fetcher is about to move
        }
        if target.is_some_and(|t| t.is_none_or(|t| record.offset >= t)) {
            // Past the target: not applied now, so the fetcher goes back to where the
            // next run must start.
            self.seek = Some(next.map_or(Offset::Beginning, Offset::Offset));
            return;
        }
        self.pending_since.get_or_insert_with(Instant::now);
        self.pending.push(record);
    }

    /// Drops what was polled and not applied, and sends the fetcher back to the
    /// committed position.
    pub(crate) fn rewind(&mut self) {
        self.pending.clear();
        self.pending_since = None;
        self.position = self.committed;
        self.seek = Some(self.committed.map_or(Offset::Beginning, Offset::Offset));
        self.eof = false;
    }

    /// A seek to `offset` finished: records from the new position may be filed (unless a
    /// newer seek was scheduled meanwhile).
    pub(crate) fn sought(&mut self, offset: Offset) {
        if self.seek == Some(offset) {
            self.seek = None;
            self.eof = false;
        }
    }
}

/// How applying one partition batch ended.
pub(crate) enum Applied {
    /// Committed; the partition is at `next_offset`.
    Committed {
        /// The new position.
        next_offset: i64,
        /// From each record's timestamp to the commit.
        latencies: Vec<Duration>,
    },
    /// Another writer moved the stored position: reload it.
    Moved,
    /// Shutdown began before it could commit.
    Interrupted,
}

/// When a run stops.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Until<'a> {
    /// When the token is cancelled.
    Cancelled,
    /// When every partition is at its end.
    End,
    /// When every partition reached its target.
    Targets(&'a BTreeMap<i32, i64>),
}

/// A batch in flight: its partition and state generation, its records, how it ended.
pub(crate) type Finished = (i32, u64, Vec<Record>, Applied);
