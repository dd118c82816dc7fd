//! [`Store`]: the consumer's tables in PostgreSQL: dead letters, keys held behind them,
//! the records parked behind those, and the inbox (see [`crate::inbox`]).
//!
//! # Sequenced dead letters
//!
//! When a record of key `k` is dead-lettered, `k` becomes *held*: a row in
//! `consumer_held_keys`. Every later record of `k` is *parked* (stored in
//! `consumer_parked`, in arrival order) instead of handled, so that no record of `k`
//! is handled before an earlier one it may depend on. Other keys are not affected.
//! [`Store::replay`] hands dead letters back to the handler; [`Store::discard`] drops
//! them. Either way, once a key has no dead letter left, its parked records are handled
//! in order and, when none is left, the key is released. A parked record that fails
//! again becomes the key's new dead letter, and the key stays held.
//!
//! Parking and releasing are ordered by the held key's row: parking locks it `FOR
//! SHARE` and parks only if it exists; the release locks it `FOR UPDATE`, checks that
//! nothing is parked or dead-lettered any more, and deletes it. A record parked while a
//! release runs is handled by that release; one that comes after it finds the key
//! released and is handled by the consumer as usual.

use std::{collections::HashSet, future::Future, time::SystemTime};

use deadpool_postgres::{GenericClient, Pool};
use tokio_postgres::Row;

use crate::{Failure, Handler, Record, Result, Retry};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The table of the crate's own migration history (apart from the service's).
const MIGRATION_TABLE: &str = "orders_consumer_migrations";

/// A dead letter as stored.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its id in the store (what [`Selection::ids`] selects).
    pub id: i64,
    /// The record as it was received.
    pub record: Record,
    /// Why it was dead-lettered (the handler's error, or why it was not handled).
    pub reason: String,
    /// The attempts made.
    pub attempts: u32,
    /// When it was dead-lettered.
    pub dead_lettered_at: SystemTime,
    /// How many records of its key are parked behind it.
    pub parked: u64,
}

/// Which dead letters an operation applies to; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these ids.
    pub ids: Option<Vec<i64>>,
    /// Only those of this key.
    pub key: Option<Vec<u8>>,
    /// Only those whose reason contains this text.
    pub reason: Option<String>,
    /// At most this many (the oldest first); `None`: all.
    pub limit: Option<i64>,
}

/// What a replay or a discard did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Dead letters handled successfully (replay) or dropped (discard).
    pub settled: usize,
    /// Dead letters whose replay failed again (they stay, with the new reason).
    pub failed: usize,
    /// Parked records handled after their key's dead letters were settled.
    pub released: usize,
    /// Parked records that failed in turn and became their key's dead letter.
    pub parked_failed: usize,
    /// Keys released: nothing of them is held back any more.
    pub keys_released: usize,
}

/// The consumer's tables, for one consumer name.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    consumer: String,
}

impl Store {
    /// The store of consumer `consumer` in the database of `pool`.
    pub fn new(pool: Pool, consumer: impl Into<String>) -> Self {
        Self { pool, consumer: consumer.into() }
    }

    /// The consumer's name.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Creates or updates the tables (safe to run from several processes at once: they
    /// wait on an advisory lock). Its history is kept in `orders_consumer_migrations`.
    pub async fn migrate(&self) -> Result<()> {
        // A fixed lock key for "consumer migrations".
        let mut runner = embedded::migrations::runner();
        runner.set_migration_table_name(MIGRATION_TABLE);
        Ok(orders_postgres::migrate(&self.pool, 7401223002, &runner, "consumer").await?)
    }

    /// The keys held back now.
    pub async fn held_keys(&self) -> Result<HashSet<Vec<u8>>> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(include_str!("sql/held_keys.sql")).await?;
        Ok(client.query(&statement, &[&self.consumer]).await?.iter().map(|row| row.get(0)).collect())
    }

    /// Stores `record` as a dead letter and, when it has a key, holds the key back.
    /// Storing it twice (a crash before the offset was committed) keeps the first copy.
    pub(crate) async fn dead_letter(&self, record: &Record, reason: &str, attempts: u32) -> Result<()> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        self.insert_dead_letter(&tx, record, reason, attempts).await?;
        if let Some(key) = &record.key {
            let hold = tx.prepare_cached(include_str!("sql/hold_key.sql")).await?;
            tx.execute(&hold, &[&self.consumer, key]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Parks `record` behind its key's dead letter: `false` (nothing parked) when its key
    /// is not held (any more): handle it as usual.
    pub(crate) async fn park(&self, record: &Record) -> Result<bool> {
        let Some(key) = &record.key else { return Ok(false) };
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let lock = tx.prepare_cached(include_str!("sql/lock_held_key_shared.sql")).await?;
        if tx.query_opt(&lock, &[&self.consumer, key]).await?.is_none() {
            return Ok(false);
        }
        let park = tx.prepare_cached(include_str!("sql/insert_parked.sql")).await?;
        let (names, values) = split_headers(record);
        tx.execute(
            &park,
            &[
                &self.consumer,
                &record.topic,
                &record.partition,
                &record.offset,
                key,
                &record.payload,
                &names,
                &values,
                &record.timestamp_ms,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The dead letters `selection` names, oldest first.
    pub async fn dead_letters(&self, selection: &Selection) -> Result<Vec<DeadLetter>> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(include_str!("sql/list_dead_letters.sql")).await?;
        let limit = selection.limit.unwrap_or(i64::MAX);
        let rows = client
            .query(&statement, &[&self.consumer, &selection.ids, &selection.key, &selection.reason, &limit])
            .await?;
        Ok(rows.iter().map(dead_letter).collect())
    }

    /// Hands the dead letters `selection` names back to `handler`, oldest first (each
    /// with up to `retry.max_attempts` attempts); a success drops the dead letter, a
    /// failure keeps it with the new reason, and the key's later dead letters wait.
    /// Then releases the keys left without dead letters (see the module docs).
    /// Replaying twice has no second effect when the handler claims an inbox id.
    pub async fn replay<H: Handler>(
        &self,
        handler: &H,
        selection: &Selection,
        retry: Retry,
    ) -> Result<Outcome> {
        self.replay_with(handler, selection, retry, |_, _| {}).await
    }

    /// [`Store::replay`], calling `progress(done, total)` before each dead letter and
    /// once after the last (for a progress display; the keys are released after that).
    pub async fn replay_with<H: Handler>(
        &self,
        handler: &H,
        selection: &Selection,
        retry: Retry,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Outcome> {
        let mut outcome = Outcome::default();
        let mut failed_keys: HashSet<Option<Vec<u8>>> = HashSet::new();
        let mut keys = Vec::new();
        let letters = self.dead_letters(selection).await?;
        let total = letters.len();
        for (done, letter) in letters.into_iter().enumerate() {
            progress(done, total);
            if failed_keys.contains(&letter.record.key) {
                continue;
            }
            let client = self.pool.get().await?;
            match attempt(handler, &letter.record, retry).await {
                Ok(()) => {
                    let delete = client.prepare_cached(include_str!("sql/delete_dead_letter.sql")).await?;
                    client.execute(&delete, &[&self.consumer, &letter.id]).await?;
                    outcome.settled += 1;
                }
                Err((failure, attempts)) => {
                    let update = client.prepare_cached(include_str!("sql/update_dead_letter.sql")).await?;
                    let reason = failure.to_string();
                    let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
                    client.execute(&update, &[&self.consumer, &letter.id, &reason, &attempts]).await?;
                    tracing::warn!(
                        id = letter.id,
                        origin = letter.record.origin(),
                        reason,
                        "replay failed again"
                    );
                    outcome.failed += 1;
                    failed_keys.insert(letter.record.key.clone());
                }
            }
            if !keys.contains(&letter.record.key) {
                keys.push(letter.record.key);
            }
        }
        progress(total, total);
        self.release_all(handler, keys, retry, &mut outcome).await?;
        Ok(outcome)
    }

    /// Drops the dead letters `selection` names, then releases the keys left without
    /// dead letters: their parked records are handled by `handler`, in order.
    pub async fn discard<H: Handler>(
        &self,
        handler: &H,
        selection: &Selection,
        retry: Retry,
    ) -> Result<Outcome> {
        self.discard_with(handler, selection, retry, |_, _| {}).await
    }

    /// [`Store::discard`], calling `progress(done, total)` as [`Store::replay_with`] does.
    pub async fn discard_with<H: Handler>(
        &self,
        handler: &H,
        selection: &Selection,
        retry: Retry,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Outcome> {
        let mut outcome = Outcome::default();
        let mut keys = Vec::new();
        let letters = self.dead_letters(selection).await?;
        let total = letters.len();
        for (done, letter) in letters.into_iter().enumerate() {
            progress(done, total);
            let client = self.pool.get().await?;
            let delete = client.prepare_cached(include_str!("sql/delete_dead_letter.sql")).await?;
            client.execute(&delete, &[&self.consumer, &letter.id]).await?;
            tracing::info!(id = letter.id, origin = letter.record.origin(), "dead letter discarded");
            outcome.settled += 1;
            if !keys.contains(&letter.record.key) {
                keys.push(letter.record.key);
            }
        }
        progress(total, total);
        self.release_all(handler, keys, retry, &mut outcome).await?;
        Ok(outcome)
    }

    /// Releases each distinct key of `keys` (records without a key hold nothing back);
    /// a key that still has a dead letter (its replay failed again) stays held.
    async fn release_all<H: Handler>(
        &self,
        handler: &H,
        keys: Vec<Option<Vec<u8>>>,
        retry: Retry,
        outcome: &mut Outcome,
    ) -> Result<()> {
        for key in keys.into_iter().flatten() {
            self.release(handler, &key, retry, outcome).await?;
        }
        Ok(())
    }

    /// Handles the parked records of `key` in order while it has no dead letter, then
    /// deletes its held row once nothing holds it any more.
    async fn release<H: Handler>(
        &self,
        handler: &H,
        key: &[u8],
        retry: Retry,
        outcome: &mut Outcome,
    ) -> Result<()> {
        let key = key.to_vec();
        loop {
            let mut client = self.pool.get().await?;
            let blocked = client.prepare_cached(include_str!("sql/key_blocked.sql")).await?;
            let next = client.prepare_cached(include_str!("sql/next_parked.sql")).await?;
            let dead = client.prepare_cached(include_str!("sql/list_dead_letters.sql")).await?;
            let none: Option<Vec<i64>> = None;
            let any: Option<String> = None;
            if !client.query(&dead, &[&self.consumer, &none, &Some(&key), &any, &1i64]).await?.is_empty() {
                return Ok(()); // a dead letter still holds the key
            }
            let Some(row) = client.query_opt(&next, &[&self.consumer, &key]).await? else {
                // Nothing parked: release the key, unless something was parked or
                // dead-lettered meanwhile (then go round again).
                let tx = client.transaction().await?;
                let lock = tx.prepare_cached(include_str!("sql/lock_held_key.sql")).await?;
                tx.query_opt(&lock, &[&self.consumer, &key]).await?;
                if tx.query_one(&blocked, &[&self.consumer, &key]).await?.get::<_, bool>(0) {
                    continue;
                }
                let release = tx.prepare_cached(include_str!("sql/release_key.sql")).await?;
                let released = tx.execute(&release, &[&self.consumer, &key]).await?;
                tx.commit().await?;
                outcome.keys_released += usize::try_from(released).unwrap_or(0);
                return Ok(());
            };
            let (id, record) = parked(&row);
            match attempt(handler, &record, retry).await {
                Ok(()) => {
                    let delete = client.prepare_cached(include_str!("sql/delete_parked.sql")).await?;
                    client.execute(&delete, &[&self.consumer, &id]).await?;
                    outcome.released += 1;
                }
                Err((failure, attempts)) => {
                    let reason = failure.to_string();
                    tracing::warn!(
                        origin = record.origin(),
                        reason,
                        "a released record failed; it is the key's dead letter now"
                    );
                    let tx = client.transaction().await?;
                    self.insert_dead_letter(&tx, &record, &reason, attempts).await?;
                    let delete = tx.prepare_cached(include_str!("sql/delete_parked.sql")).await?;
                    tx.execute(&delete, &[&self.consumer, &id]).await?;
                    tx.commit().await?;
                    outcome.parked_failed += 1;
                    return Ok(());
                }
            }
        }
    }

    async fn insert_dead_letter(
        &self,
        client: &impl GenericClient,
        record: &Record,
        reason: &str,
        attempts: u32,
    ) -> Result<()> {
        let insert = client.prepare_cached(include_str!("sql/insert_dead_letter.sql")).await?;
        let (names, values) = split_headers(record);
        let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
        client
            .execute(
                &insert,
                &[
                    &self.consumer,
                    &record.topic,
                    &record.partition,
                    &record.offset,
                    &record.key,
                    &record.payload,
                    &names,
                    &values,
                    &record.timestamp_ms,
                    &reason,
                    &attempts,
                ],
            )
            .await?;
        Ok(())
    }
}

/// Handles `record` with up to `retry.max_attempts` attempts (transient failures are
/// retried after the backoff); the last failure and the attempts made otherwise.
pub(crate) async fn attempt<H: Handler>(
    handler: &H,
    record: &Record,
    retry: Retry,
) -> Result<(), (Failure, u32)> {
    attempt_with(record, retry, |record| handler.handle(record)).await
}

async fn attempt_with<'r, F, Fut>(record: &'r Record, retry: Retry, mut call: F) -> Result<(), (Failure, u32)>
where
    F: FnMut(&'r Record) -> Fut,
    Fut: Future<Output = Result<(), Failure>>,
{
    let mut attempts = 0;
    loop {
        attempts += 1;
        match call(record).await {
            Ok(()) => return Ok(()),
            Err(failure) if failure.is_transient() => match retry.delay_before(attempts + 1) {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err((failure, attempts)),
            },
            Err(failure) => return Err((failure, attempts)),
        }
    }
}

fn split_headers(record: &Record) -> (Vec<&str>, Vec<Option<&[u8]>>) {
    record.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref())).unzip()
}

fn record_from(row: &Row, at: usize) -> Record {
    let names: Vec<String> = row.get(at + 5);
    let values: Vec<Option<Vec<u8>>> = row.get(at + 6);
    Record {
        topic: row.get(at),
        partition: row.get(at + 1),
        offset: row.get(at + 2),
        key: row.get(at + 3),
        payload: row.get(at + 4),
        headers: names.into_iter().zip(values).collect(),
        timestamp_ms: row.get(at + 7),
    }
}

fn dead_letter(row: &Row) -> DeadLetter {
    DeadLetter {
        id: row.get(0),
        record: record_from(row, 1),
        reason: row.get(9),
        attempts: u32::try_from(row.get::<_, i32>(10)).unwrap_or(0),
        dead_lettered_at: row.get(11),
        parked: u64::try_from(row.get::<_, i64>(12)).unwrap_or(0),
    }
}

fn parked(row: &Row) -> (i64, Record) {
    (row.get(0), record_from(row, 1))
}
