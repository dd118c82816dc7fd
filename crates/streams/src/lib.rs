//! Stateful stream processing in the manner of Kafka Streams, for rdkafka users: the
//! Rust ecosystem has no maintained equivalent. It knows nothing of what the records
//! mean.
//!
//! Two parts. The state and time machinery is free of I/O, so that it can be tested
//! with a controllable clock:
//!
//! - [`Windows`]: epoch-aligned tumbling or hopping event-time windows, half-open
//!   `[start, end)`, with a grace period; a window closes once stream time (the
//!   largest event time seen) reaches its end plus the grace.
//! - [`WindowStore`]: the windowed aggregates of one task (one input partition).
//!   Records update the open windows they fall in; those of closed windows are late
//!   and counted nowhere. Changed windows are emitted at most once per emit interval
//!   (as Kafka Streams' record cache does); a closed window is emitted once more as
//!   final and evicted. A wall-clock punctuation closes the windows of a task whose
//!   stream time stands still (a choice Kafka Streams does not offer; see
//!   [`WindowStore::punctuate`]).
//! - [`TableStore`]: a key-value store of one task (the latest value per key).
//!
//! Both stores collect their changes ([`WindowStore::take_changes`],
//! [`TableStore::take_changes`]), the latest per key, for a compacted changelog topic
//! written in the same Kafka transaction as the output and the input offsets; and both
//! rebuild themselves from that changelog ([`WindowStore::restore`],
//! [`TableStore::restore`]) before a task resumes, after a crash or on a new
//! assignment.
//!
//! The [`runner`] runs a [`Topology`] (a task per input partition: its state, what it
//! does with a record, what it emits before each commit, its changelog records) on
//! Kafka exactly once: outputs, changelog records and input offsets in one
//! transaction per commit interval, state restored from the changelog on every
//! assignment, the open transaction committed inside the revoke callback, an abortable
//! error answered by abort, restore and seek back. `tests/exactly_once.rs` halts one
//! instance mid-stream and checks that the next one neither loses nor doubles a count.
//! [`Guarantee::AtLeastOnce`] runs the same cycle without transactions (flush, then
//! commit the offsets; a crash in between repeats the records since the last commit):
//! the baseline that shows what exactly once costs.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use orders_streams::{WindowStore, Windows};
//!
//! let windows = Windows::tumbling(Duration::from_secs(3600))?.with_grace(Duration::from_secs(60));
//! let mut counts: WindowStore<&str, u64> = WindowStore::new(windows, Duration::from_secs(1));
//! counts.add(&"alice", 1_000, |count| *count += 1);
//! counts.add(&"alice", 2_000, |count| *count += 1);
//! let updates = counts.updates_due(0); // one update: alice, [0, 1 h), 2
//! assert_eq!((updates.len(), updates[0].value), (1, 2));
//! counts.add(&"bob", 3_660_000, |count| *count += 1); // stream time: 1 h 1 min
//! let finals = counts.close(); // alice's first hour is final
//! assert!(finals[0].is_final && finals[0].value == 2);
//! # Ok::<(), orders_streams::WindowError>(())
//! ```
//!
//! `examples/windows.rs` aggregates a small out-of-order stream and prints what is
//! emitted when.

pub mod runner;
pub mod table;
pub mod window;
pub mod windowed;

pub use runner::{
    ChangelogRecord, Guarantee, Input, Output, RunError, Settings, Stop, StopOnDrop, Topology, run,
};
pub use table::{TableChange, TableStore};
pub use window::{Window, WindowError, Windows};
pub use windowed::{Added, Change, Emitted, WindowStore};
