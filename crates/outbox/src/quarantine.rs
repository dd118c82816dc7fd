//! Rows that can never be published, set aside: [`Quarantine`] lists them, re-queues
//! them or discards them (an operator's tools, see "Rows that can never be published"
//! in the crate docs), and the workers' count of each failing row's attempts.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, SystemTime},
};

use tokio::time::Instant;

use deadpool_postgres::Pool;

use crate::Result;

/// One quarantined outbox row.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantinedRow {
    /// The row's outbox id (kept: a re-queued row goes back with it).
    pub id: i64,
    /// Its shard.
    pub shard: i32,
    /// The topic it is addressed to.
    pub topic: String,
    /// Its key.
    pub key: Vec<u8>,
    /// The size of its payload in bytes.
    pub payload_bytes: i64,
    /// Its headers.
    pub headers: serde_json::Value,
    /// When the writer inserted it.
    pub created_at: SystemTime,
    /// When the relay set it aside.
    pub quarantined_at: SystemTime,
    /// The failed attempts to publish it.
    pub attempts: i32,
    /// Why the last attempt failed.
    pub reason: String,
    /// The rows of its key waiting behind it in the outbox.
    pub waiting: i64,
}

/// Which quarantined rows an operation is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The rows with these ids.
    Ids(Vec<i64>),
    /// Every quarantined row.
    All,
}

/// The quarantine table, for operators: what is set aside, and putting it back or
/// dropping it. Relays running meanwhile are woken (on the notify channel, when given)
/// and go on with the keys concerned at once.
#[derive(Debug, Clone)]
pub struct Quarantine {
    pool: Pool,
    notify_channel: Option<String>,
}

impl Quarantine {
    /// The quarantine of the outbox reached through `pool`; `notify_channel` is the
    /// relays' channel (`None`: they find the change at their next poll).
    pub fn new(pool: Pool, notify_channel: Option<String>) -> Self {
        Self { pool, notify_channel }
    }

    /// The quarantined rows, oldest first, at most `limit`.
    ///
    /// # Errors
    /// When the database cannot be reached or the statement fails.
    pub async fn list(&self, limit: usize) -> Result<Vec<QuarantinedRow>> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(include_str!("sql/quarantine_list.sql")).await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client.query(&stmt, &[&limit]).await?;
        Ok(rows
            .iter()
            .map(|r| QuarantinedRow {
                id: r.get(0),
                shard: r.get(1),
                topic: r.get(2),
                key: r.get(3),
                payload_bytes: r.get(4),
                headers: r.get(5),
                created_at: r.get(6),
                quarantined_at: r.get(7),
                attempts: r.get(8),
                reason: r.get(9),
                waiting: r.get(10),
            })
            .collect())
    }

    /// Puts the `selection` back in the outbox, each row with its own id, so that it
    /// is published before the rows of its key that waited behind it. Returns the ids
    /// re-queued (ids not in the quarantine are left out).
    ///
    /// # Errors
    /// When the database cannot be reached or the statement fails.
    pub async fn requeue(&self, selection: &Selection) -> Result<Vec<i64>> {
        self.change(include_str!("sql/quarantine_requeue.sql"), selection).await
    }

    /// Drops the `selection` for good; the later rows of their keys go on. Returns the
    /// ids discarded.
    ///
    /// # Errors
    /// When the database cannot be reached or the statement fails.
    pub async fn discard(&self, selection: &Selection) -> Result<Vec<i64>> {
        self.change(include_str!("sql/quarantine_discard.sql"), selection).await
    }

    async fn change(&self, sql: &str, selection: &Selection) -> Result<Vec<i64>> {
        let (ids, all) = match selection {
            Selection::Ids(ids) => (ids.clone(), false),
            Selection::All => (Vec::new(), true),
        };
        let mut client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql).await?;
        let tx = client.transaction().await?;
        let changed: Vec<i64> = tx.query(&stmt, &[&ids, &all]).await?.iter().map(|r| r.get(0)).collect();
        if let (Some(channel), false) = (&self.notify_channel, changed.is_empty()) {
            let notify = tx.prepare_cached(include_str!("sql/notify.sql")).await?;
            tx.execute(&notify, &[channel]).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }
}

/// Failed attempts per row, counted by one worker for the rows whose failure is the
/// record's own. In memory: a relay that restarts, or a shard that moves to another
/// relay, starts counting again (the bound still holds, per relay).
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    counts: HashMap<i64, u32>,
    /// Rows that failed together for a reason of a record's own, without saying which
    /// record (a record batch the broker refused as a whole): each is sent alone next,
    /// and only then charged with an attempt.
    suspects: HashSet<i64>,
}

/// More rows than this failing at once means something else is wrong; forgetting
/// the counts only delays their quarantine.
const MAX_TRACKED: usize = 10_000;

impl Attempts {
    /// Counts one more failed attempt of row `id`; returns the attempts so far.
    pub(crate) fn failed(&mut self, id: i64) -> u32 {
        if self.counts.len() >= MAX_TRACKED && !self.counts.contains_key(&id) {
            self.counts.clear();
        }
        let count = self.counts.entry(id).or_insert(0);
        *count += 1;
        *count
    }

    /// Forgets the rows `ids` (published or quarantined).
    pub(crate) fn forget(&mut self, ids: &[i64]) {
        if !self.counts.is_empty() || !self.suspects.is_empty() {
            for id in ids {
                self.counts.remove(id);
                self.suspects.remove(id);
            }
        }
    }

    /// Marks the rows `ids` as suspects, to be sent alone.
    pub(crate) fn suspect(&mut self, ids: impl IntoIterator<Item = i64>) {
        if self.suspects.len() >= MAX_TRACKED {
            self.suspects.clear();
        }
        self.suspects.extend(ids);
    }

    /// The rows `ids` no longer suspects (each was sent alone).
    pub(crate) fn cleared(&mut self, ids: &[i64]) {
        for id in ids {
            self.suspects.remove(id);
        }
    }

    /// The suspects, to send alone.
    pub(crate) fn suspects(&self) -> HashSet<i64> {
        self.suspects.clone()
    }
}

/// Keys held back by one worker: each has a row the broker refused for a reason of its
/// own, waiting for its next attempt. Reads leave their rows out until then, so that
/// the other keys go on meanwhile (a held key's later rows wait, as behind a
/// quarantined row). In memory, like [`Attempts`].
#[derive(Debug, Default)]
pub(crate) struct Held {
    until: HashMap<Vec<u8>, Instant>,
}

impl Held {
    /// Holds `key` back until `until`.
    pub(crate) fn hold(&mut self, key: &[u8], until: Instant) {
        if self.until.len() >= MAX_TRACKED && !self.until.contains_key(key) {
            // Releasing keys early only retries their rows sooner.
            self.until.clear();
        }
        self.until.insert(key.to_vec(), until);
    }

    /// The keys held back at `now` (the others are forgotten).
    pub(crate) fn active(&mut self, now: Instant) -> Vec<Vec<u8>> {
        self.until.retain(|_, until| *until > now);
        self.until.keys().cloned().collect()
    }

    /// How long until the next key is released (`None`: none held).
    pub(crate) fn next_release(&self, now: Instant) -> Option<Duration> {
        self.until.values().min().map(|until| until.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_count_per_row_until_forgotten() {
        let mut attempts = Attempts::default();
        assert_eq!(attempts.failed(7), 1);
        assert_eq!(attempts.failed(7), 2);
        assert_eq!(attempts.failed(8), 1);
        attempts.forget(&[7]);
        assert_eq!(attempts.failed(7), 1);
    }

    #[test]
    fn keys_are_held_until_their_time() {
        let now = Instant::now();
        let mut held = Held::default();
        assert_eq!(held.next_release(now), None);
        held.hold(b"a", now + Duration::from_secs(2));
        held.hold(b"b", now + Duration::from_secs(1));
        assert_eq!(held.next_release(now), Some(Duration::from_secs(1)));
        let mut keys = held.active(now);
        keys.sort();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(held.active(now + Duration::from_secs(1)), vec![b"a".to_vec()]);
        assert!(held.active(now + Duration::from_secs(2)).is_empty());
    }
}
