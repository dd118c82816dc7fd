//! Checking per-key order on a topic read back by a test: every key's versions must
//! first appear as 1, 2, 3... with none missing; copies of a version already seen are
//! duplicates (allowed by at-least-once delivery, and counted).

use std::collections::HashMap;

/// What a reader saw, key by key.
#[derive(Debug, Default, Clone)]
pub struct Sequences {
    highest: HashMap<Vec<u8>, u64>,
    /// Records that repeated a version already seen for their key.
    pub duplicates: usize,
    /// Records whose version jumped past the next one expected (a gap or reordering),
    /// as `key: expected n, got m`.
    pub out_of_order: Vec<String>,
    /// All records observed.
    pub records: usize,
}

impl Sequences {
    /// Records one message of `key` carrying `version`.
    pub fn observe(&mut self, key: &[u8], version: u64) {
        self.records += 1;
        let highest = self.highest.entry(key.to_vec()).or_insert(0);
        if version == *highest + 1 {
            *highest = version;
        } else if version <= *highest {
            self.duplicates += 1;
        } else {
            self.out_of_order.push(format!(
                "{}: expected version {}, got {version}",
                String::from_utf8_lossy(key),
                *highest + 1
            ));
            *highest = version;
        }
    }

    /// Distinct versions seen in order (the sum over keys of the highest version).
    pub fn distinct(&self) -> u64 {
        self.highest.values().sum()
    }

    /// The highest version seen for `key`.
    pub fn highest(&self, key: &[u8]) -> u64 {
        self.highest.get(key).copied().unwrap_or(0)
    }

    /// Number of keys seen.
    pub fn keys(&self) -> usize {
        self.highest.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_counted_and_jumps_reported() {
        let mut s = Sequences::default();
        for v in [1, 2, 1, 2, 3] {
            s.observe(b"a", v);
        }
        s.observe(b"b", 2);
        assert_eq!(s.duplicates, 2);
        assert_eq!(s.out_of_order, vec!["b: expected version 1, got 2".to_string()]);
        assert_eq!(s.highest(b"a"), 3);
        assert_eq!(s.distinct(), 5);
        assert_eq!(s.records, 6);
    }
}
