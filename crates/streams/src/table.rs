//! A key-value store of one task with a changelog: the latest value per key, what
//! changed since the changelog was last written, and the restore from it.

use std::collections::BTreeMap;

/// One key's change, as the changelog records it: its value now, or `None` once
/// deleted (a tombstone, which compaction eventually drops).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableChange<K, V> {
    /// The key.
    pub key: K,
    /// Its value, or `None` when deleted.
    pub value: Option<V>,
}

/// A key-value store whose changes are collected for a changelog topic.
#[derive(Debug, Clone)]
pub struct TableStore<K, V> {
    values: BTreeMap<K, V>,
    changes: BTreeMap<K, Option<V>>,
}

impl<K, V> Default for TableStore<K, V> {
    fn default() -> Self {
        Self { values: BTreeMap::new(), changes: BTreeMap::new() }
    }
}

impl<K: Ord + Clone, V: Clone> TableStore<K, V> {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.values.get(key)
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: K, value: V) {
        self.changes.insert(key.clone(), Some(value.clone()));
        self.values.insert(key, value);
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: &K) {
        if self.values.remove(key).is_some() {
            self.changes.insert(key.clone(), None);
        }
    }

    /// What changed since the last call, the latest change per key.
    pub fn take_changes(&mut self) -> Vec<TableChange<K, V>> {
        std::mem::take(&mut self.changes).into_iter().map(|(key, value)| TableChange { key, value }).collect()
    }

    /// Applies one changelog record while restoring.
    pub fn restore(&mut self, change: TableChange<K, V>) {
        match change.value {
            Some(value) => self.values.insert(change.key, value),
            None => self.values.remove(&change.key),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_the_latest_per_key_and_restore_the_store() {
        let mut store = TableStore::new();
        store.put("order-1", 1);
        store.put("order-1", 2);
        store.put("order-2", 1);
        store.delete(&"order-2");
        store.delete(&"order-3"); // not there: no tombstone
        let changes = store.take_changes();
        assert_eq!(
            changes,
            vec![TableChange { key: "order-1", value: Some(2) }, TableChange { key: "order-2", value: None }]
        );
        assert!(store.take_changes().is_empty());

        let mut restored = TableStore::new();
        restored.restore(TableChange { key: "order-2", value: Some(9) });
        for change in changes {
            restored.restore(change);
        }
        assert_eq!((restored.get(&"order-1"), restored.get(&"order-2"), restored.len()), (Some(&2), None, 1));
    }
}
