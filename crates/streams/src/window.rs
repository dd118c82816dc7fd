//! Event-time windows: which windows a timestamp falls in, and when a window closes.
//!
//! Windows are aligned to the epoch and half-open, `[start, end)`, as in Kafka Streams:
//! a tumbling window of one hour holds the timestamps from `10:00:00.000` up to but not
//! including `11:00:00.000`. Hopping windows of size S advancing by A (A < S) overlap,
//! so a timestamp falls in S / A of them. Timestamps are milliseconds since the epoch
//! and may be negative.

use std::{fmt, time::Duration};

/// A window `[start_ms, end_ms)`, milliseconds since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    /// The first millisecond in the window.
    pub start_ms: i64,
    /// The first millisecond after it.
    pub end_ms: i64,
}

impl Window {
    /// Whether `ts_ms` falls in it.
    pub fn contains(&self, ts_ms: i64) -> bool {
        self.start_ms <= ts_ms && ts_ms < self.end_ms
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start_ms, self.end_ms)
    }
}

/// Why a window specification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// A size or advance of zero, or one that does not fit in milliseconds.
    #[error("the window {0} must be at least one millisecond and at most i64::MAX of them")]
    Length(&'static str),
    /// An advance longer than the size would leave gaps between windows.
    #[error("the advance ({advance_ms} ms) is longer than the size ({size_ms} ms)")]
    AdvanceAboveSize {
        /// The advance asked for.
        advance_ms: i64,
        /// The size asked for.
        size_ms: i64,
    },
}

/// Epoch-aligned windows of one size, one advance and one grace period.
///
/// A window **closes** once stream time (the largest timestamp seen) reaches its end
/// plus the grace period: `stream_time >= end + grace`. Until then a record with a
/// timestamp in it updates it, however late it arrives; after, the record is late for
/// that window. This is Kafka Streams' rule (`windowEnd > streamTime - grace` keeps a
/// window open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    size_ms: i64,
    advance_ms: i64,
    grace_ms: i64,
}

fn millis(what: &'static str, duration: Duration) -> Result<i64, WindowError> {
    match i64::try_from(duration.as_millis()) {
        Ok(ms) if ms > 0 => Ok(ms),
        _ => Err(WindowError::Length(what)),
    }
}

impl Windows {
    /// Tumbling windows of `size`, no grace.
    ///
    /// # Errors
    /// When `size` is under a millisecond or too long.
    pub fn tumbling(size: Duration) -> Result<Self, WindowError> {
        let size_ms = millis("size", size)?;
        Ok(Self { size_ms, advance_ms: size_ms, grace_ms: 0 })
    }

    /// Hopping windows of `size`, a new one every `advance`, no grace.
    ///
    /// # Errors
    /// When either is under a millisecond or too long, or `advance` exceeds `size`.
    pub fn hopping(size: Duration, advance: Duration) -> Result<Self, WindowError> {
        let size_ms = millis("size", size)?;
        let advance_ms = millis("advance", advance)?;
        if advance_ms > size_ms {
            return Err(WindowError::AdvanceAboveSize { advance_ms, size_ms });
        }
        Ok(Self { size_ms, advance_ms, grace_ms: 0 })
    }

    /// The same windows, accepting records up to `grace` after a window's end.
    pub fn with_grace(self, grace: Duration) -> Self {
        Self { grace_ms: i64::try_from(grace.as_millis()).unwrap_or(i64::MAX), ..self }
    }

    /// The size, in milliseconds.
    pub fn size_ms(&self) -> i64 {
        self.size_ms
    }

    /// The grace period, in milliseconds.
    pub fn grace_ms(&self) -> i64 {
        self.grace_ms
    }

    /// The windows `ts_ms` falls in, oldest first: one for tumbling windows, size /
    /// advance (rounded up) for hopping ones.
    pub fn windows_of(&self, ts_ms: i64) -> Vec<Window> {
        // The latest start at or before ts, then every advance back while ts is inside.
        let last_start = ts_ms - ts_ms.rem_euclid(self.advance_ms);
        let mut windows = Vec::with_capacity(usize::try_from(self.size_ms / self.advance_ms).unwrap_or(1));
        let mut start = last_start;
        loop {
            let end = start.saturating_add(self.size_ms);
            if end <= ts_ms {
                break;
            }
            windows.push(Window { start_ms: start, end_ms: end });
            match start.checked_sub(self.advance_ms) {
                Some(earlier) => start = earlier,
                None => break,
            }
        }
        windows.reverse();
        windows
    }

    /// When `window` closes: its end plus the grace period.
    pub fn close_time(&self, window: &Window) -> i64 {
        window.end_ms.saturating_add(self.grace_ms)
    }

    /// Whether `window` is closed at `stream_time_ms`.
    pub fn is_closed(&self, window: &Window, stream_time_ms: i64) -> bool {
        stream_time_ms >= self.close_time(window)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn tumbling_windows_are_epoch_aligned_and_half_open() {
        let windows = Windows::tumbling(HOUR).unwrap();
        let ten = 10 * 3_600_000;
        assert_eq!(windows.windows_of(ten), vec![Window { start_ms: ten, end_ms: ten + 3_600_000 }]);
        assert_eq!(windows.windows_of(ten - 1), vec![Window { start_ms: ten - 3_600_000, end_ms: ten }]);
        assert_eq!(windows.windows_of(-1), vec![Window { start_ms: -3_600_000, end_ms: 0 }]);
    }

    #[test]
    fn hopping_windows_overlap() {
        let windows = Windows::hopping(Duration::from_millis(10), Duration::from_millis(5)).unwrap();
        assert_eq!(
            windows.windows_of(12),
            vec![Window { start_ms: 5, end_ms: 15 }, Window { start_ms: 10, end_ms: 20 }]
        );
        // An advance that does not divide the size: 10 / 4 rounded up.
        let windows = Windows::hopping(Duration::from_millis(10), Duration::from_millis(4)).unwrap();
        assert_eq!(windows.windows_of(9).iter().map(|w| w.start_ms).collect::<Vec<_>>(), vec![0, 4, 8]);
        assert_eq!(windows.windows_of(10).iter().map(|w| w.start_ms).collect::<Vec<_>>(), vec![4, 8]);
    }

    #[test]
    fn bad_specifications_are_refused() {
        assert_eq!(Windows::tumbling(Duration::ZERO), Err(WindowError::Length("size")));
        assert_eq!(
            Windows::hopping(Duration::from_millis(5), Duration::from_millis(6)),
            Err(WindowError::AdvanceAboveSize { advance_ms: 6, size_ms: 5 })
        );
    }

    #[test]
    fn a_window_closes_when_stream_time_reaches_end_plus_grace() {
        let windows =
            Windows::tumbling(Duration::from_millis(10)).unwrap().with_grace(Duration::from_millis(3));
        let window = Window { start_ms: 0, end_ms: 10 };
        assert!(!windows.is_closed(&window, 12));
        assert!(windows.is_closed(&window, 13));
    }

    proptest! {
        #[test]
        fn every_window_of_a_timestamp_contains_it(
            ts in -1_000_000_000i64..1_000_000_000,
            size in 1i64..10_000,
            advance_fraction in 1i64..=100,
        ) {
            let advance = (size * advance_fraction / 100).max(1);
            let windows = Windows::hopping(
                Duration::from_millis(size.unsigned_abs()),
                Duration::from_millis(advance.unsigned_abs()),
            ).unwrap();
            // Independently: every multiple of the advance in (ts - size, ts].
            let expected: Vec<Window> = (ts - size + 1..=ts)
                .filter(|start| start.rem_euclid(advance) == 0)
                .map(|start| Window { start_ms: start, end_ms: start + size })
                .collect();
            let found = windows.windows_of(ts);
            prop_assert!(!found.is_empty());
            prop_assert_eq!(&found, &expected);
            prop_assert!(found.iter().all(|window| window.contains(ts)));
        }
    }
}
