//! Which offset of a partition may be committed: the contiguous done prefix.
//!
//! Records are handled out of offset order (different keys run concurrently), so the
//! position committed for a partition is the lowest offset not yet done: committing
//! past it would lose that record on a crash (librdkafka's INTRODUCTION.md,
//! "At-least-once processing": "If offset i+n is committed before i … [i,i+n) might be
//! lost"). Records done beyond it are handled again after a crash or a rebalance,
//! which the inbox makes harmless.

use std::collections::BTreeSet;

/// The offsets of one partition taken for work and not yet committed.
#[derive(Debug, Default, Clone)]
pub(crate) struct PartitionOffsets {
    /// Taken and not done yet.
    unfinished: BTreeSet<i64>,
    /// The offset after the highest one taken (the position once everything is done).
    next: Option<i64>,
    /// The position last handed out by [`PartitionOffsets::commit_due`].
    committed: Option<i64>,
}

impl PartitionOffsets {
    /// `offset` was received and is to be handled. Offsets are taken in increasing
    /// order; one at or below an offset already taken (a redelivery after a seek) is
    /// ignored and reported as `false`.
    pub(crate) fn take(&mut self, offset: i64) -> bool {
        if self.next.is_some_and(|next| offset < next) {
            return false;
        }
        self.unfinished.insert(offset);
        self.next = Some(offset + 1);
        true
    }

    /// `offset` is done (handled, dead-lettered, parked or skipped).
    pub(crate) fn done(&mut self, offset: i64) {
        self.unfinished.remove(&offset);
    }

    /// The position the done prefix has reached: the lowest unfinished offset, or the
    /// offset after the highest one taken when all are done; `None` before any.
    pub(crate) fn position(&self) -> Option<i64> {
        self.unfinished.first().copied().or(self.next)
    }

    /// The position to commit when it moved since the last call, `None` otherwise.
    pub(crate) fn commit_due(&mut self) -> Option<i64> {
        let position = self.position()?;
        if self.committed.is_some_and(|c| c >= position) {
            return None;
        }
        self.committed = Some(position);
        Some(position)
    }

    /// Taken and not done yet.
    #[cfg(test)]
    pub(crate) fn unfinished(&self) -> usize {
        self.unfinished.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_position_stops_at_the_lowest_unfinished_offset() {
        let mut offsets = PartitionOffsets::default();
        assert_eq!(offsets.position(), None);
        for offset in 10..15 {
            assert!(offsets.take(offset));
        }
        assert_eq!(offsets.position(), Some(10));
        offsets.done(11);
        offsets.done(13);
        assert_eq!(offsets.commit_due(), Some(10), "10 is not done: nothing past it");
        offsets.done(10);
        assert_eq!(offsets.commit_due(), Some(12));
        assert_eq!(offsets.commit_due(), None, "unchanged since the last commit");
        offsets.done(12);
        offsets.done(14);
        assert_eq!(offsets.commit_due(), Some(15));
        assert_eq!(offsets.unfinished(), 0);
    }

    #[test]
    fn a_redelivered_offset_is_not_taken_twice() {
        let mut offsets = PartitionOffsets::default();
        assert!(offsets.take(5));
        assert!(!offsets.take(5));
        assert!(!offsets.take(3));
        assert!(offsets.take(9), "gaps (compacted or transaction markers) are fine");
        offsets.done(5);
        assert_eq!(offsets.position(), Some(9));
    }

    proptest! {
        /// Whatever the order in which records finish, the committed position never
        /// passes an unfinished offset and reaches the end once all are done.
        #[test]
        fn never_commits_past_unfinished_work(order in Just((0..40i64).collect::<Vec<_>>()).prop_shuffle()) {
            let mut offsets = PartitionOffsets::default();
            for offset in 0..40 {
                offsets.take(offset);
            }
            let mut done = BTreeSet::new();
            for offset in order {
                offsets.done(offset);
                done.insert(offset);
                if let Some(position) = offsets.commit_due() {
                    prop_assert!((0..position).all(|o| done.contains(&o)), "committed {} with gaps", position);
                }
            }
            prop_assert_eq!(offsets.position(), Some(40));
        }
    }
}
