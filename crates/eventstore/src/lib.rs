//! An event store on PostgreSQL, with optimistic concurrency, snapshots, idempotency
//! records and a transactional outbox, all written in one transaction.
//!
//! The store is generic: a stream is any aggregate instance named by a UUID, an event
//! is opaque bytes (the caller's serialization) with a type name, a snapshot is opaque
//! bytes at a version, an outbox message is a Kafka-ready record (topic, key, payload,
//! headers). It knows nothing of what the events mean.
//!
//! # Guarantees
//!
//! - **No lost update.** [`EventStore::append`] writes versions `expected + 1 ..`;
//!   `(stream_id, version)` is the primary key, so when another writer appended first
//!   the insert fails and the append returns [`Error::Conflict`], whatever the timing
//!   (the database decides, not a prior read).
//! - **Outbox exactly for committed events.** Outbox rows, the snapshot and the
//!   idempotency record are written in the same transaction as the events: all or
//!   none become visible.
//! - **Order per key in the outbox.** Rows get increasing ids from an identity column.
//!   A stream's next append starts after its previous one committed (it must read the
//!   committed version to expect it), so one key's rows are in `id` order. Each row
//!   carries a `shard`, a stable hash of its key ([`outbox_shard`]), so that several
//!   relays can split the outbox by shard and keep one key on one relay.
//! - **Relays are woken, never required to be.** When [`Options::notify_channel`] is
//!   set, an append also sends `NOTIFY` on it, in the transaction, so a listening relay
//!   wakes at commit. Relays must still poll: a notification is a hint.
//!
//! # Failures and load
//!
//! - **Every error says what to do.** [`Error::is_transient`] tells a retry-later
//!   failure (database down, overload, deadline, shut down, unknown outcome) from a
//!   lost race ([`Error::Conflict`], [`Error::DuplicateIdempotencyKey`]) or a bug.
//!   [`classify`] is the one place a PostgreSQL error is sorted into a unique
//!   violation, a transient failure or a permanent one.
//! - **A commit whose answer is lost is settled, not guessed.** When the connection
//!   breaks after COMMIT was sent, the store tries the same appends again: that try
//!   commits, or meets rows that are the appends' own and answers `Ok`. It never
//!   answers a conflict for an append that took effect; when it cannot learn the
//!   outcome it says so ([`Error::OutcomeUnknown`]), and appending the same events
//!   again later is safe for the same reason.
//! - **Bounded waiting.** Every append has a deadline ([`Options::append_timeout`]);
//!   with group commit the queue is bounded ([`GroupCommit::max_queued`]) and a full
//!   queue answers [`Error::Overloaded`] at once. A database outage fails a whole
//!   batch at once, with one connection attempt, instead of one attempt per append.
//! - **Shared transactions do not deadlock each other.** Each writes its rows sorted
//!   (keys, then events by stream and version, then snapshots by stream), so any two
//!   take their row locks in one order. A transaction the server aborts anyway for a
//!   deadlock or a serialization failure (40P01, 40001: a writer that does not sort)
//!   is not an outage: a group is tried again one append at a time, and only a single
//!   append answers the transient error.
//! - **Idempotency keys are claimed first** in each transaction, so a request racing
//!   its own retry makes the retry wait for the first, then find the key taken
//!   ([`Error::DuplicateIdempotencyKey`]) and replay the recorded answer.
//!
//! # Schema
//!
//! Migrations live in `migrations/` (refinery, applied by [`EventStore::migrate`] under
//! an advisory lock so that replicas starting together do not race). Queries live in
//! `src/sql/` and run as cached prepared statements. `V3` adds `outbox_quarantine`,
//! where a relay sets aside a row it could never publish (see `orders-outbox`).
//!
//! Migrations run on a connection taken out of the pool (and closed afterwards), free
//! of the pool's session limits ([`orders_postgres::Session`]): a migration may
//! rightly take longer than a request's `statement_timeout`, and one cut short on
//! every retry would keep the service from ever becoming ready. So the statement
//! timeout is off, and waiting for another replica's migration (the advisory lock)
//! has no limit. A lock a migration statement needs is waited for at most
//! [`MIGRATION_LOCK_TIMEOUT`]: DDL queued behind a long transaction would hold up
//! every query queued behind it, so it gives up and the migration is tried again
//! later (the services retry it with backoff).
//!
//! With the feature `test-support`, [`test_support`] appends test events the way a
//! service does, for the tests of the crates reading the outbox.

use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

mod commit;
mod error;
mod group_commit;
#[cfg(feature = "test-support")]
pub mod test_support;
mod transaction;

pub use error::Error;
pub use group_commit::GroupCommit;
pub use orders_outbox::{OUTBOX_SHARDS, OutboxMessage, outbox_shard};
pub use orders_postgres::{Failure, aborted_by_concurrency, classify};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The longest one migration statement waits for a lock (a table lock held by a
/// long transaction) before the migration fails, to be tried again by the caller.
pub const MIGRATION_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique id of the event.
    pub event_id: Uuid,
    /// The stream version this event produces.
    pub version: u64,
    /// The event's type name, for readers that do not decode the payload.
    pub event_type: String,
    /// The serialized event.
    pub payload: Vec<u8>,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The stream version this event produced.
    pub version: u64,
    /// Unique id of the event.
    pub event_id: Uuid,
    /// The event's type name.
    pub event_type: String,
    /// The serialized event.
    pub payload: Vec<u8>,
    /// When it was committed.
    pub recorded_at: DateTime<Utc>,
}

/// A stream's serialized state at a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The version the state includes.
    pub version: u64,
    /// The serialized state.
    pub state: Vec<u8>,
}

/// The answer to a request, stored under its idempotency key with the effect.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyRecord {
    /// The key (scope it, for example `http:<key>` or `command:<id>`).
    pub key: String,
    /// A hash of the request, to tell a retry from a different request with the same key.
    pub request_hash: Vec<u8>,
    /// The answer's status.
    pub status: u16,
    /// The answer's body.
    pub response: serde_json::Value,
    /// How long the record lives.
    pub ttl: Duration,
}

/// A recorded answer found by [`EventStore::find_idempotency`].
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAnswer {
    /// Hash of the request that produced it.
    pub request_hash: Vec<u8>,
    /// The answer's status.
    pub status: u16,
    /// The answer's body.
    pub response: serde_json::Value,
}

/// Everything one append writes, in one transaction.
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    /// The stream.
    pub stream_id: Uuid,
    /// The version the caller read (0 for a new stream).
    pub expected_version: u64,
    /// The new events, versions `expected_version + 1 ..` in order.
    pub events: &'a [NewEvent],
    /// Outbox rows to write with them.
    pub outbox: &'a [OutboxMessage],
    /// A snapshot to keep (replaces an older one).
    pub snapshot: Option<&'a Snapshot>,
    /// The answer to record under an idempotency key.
    pub idempotency: Option<&'a IdempotencyRecord>,
}

/// A stream as loaded: the latest snapshot, if any, and the events after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The latest snapshot.
    pub snapshot: Option<Snapshot>,
    /// Events after the snapshot (all of them without one), oldest first.
    pub events: Vec<RecordedEvent>,
}

impl Loaded {
    /// The stream's current version (0 when it does not exist).
    pub fn version(&self) -> u64 {
        self.events.last().map(|e| e.version).or(self.snapshot.as_ref().map(|s| s.version)).unwrap_or(0)
    }
}

/// Settings of an [`EventStore`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Channel to `NOTIFY` in every append transaction (`None`: no notification).
    pub notify_channel: Option<String>,
    /// Let concurrent appends share transactions ([`group_commit`]); `None`: one
    /// transaction per append.
    pub group_commit: Option<GroupCommit>,
    /// The most an append may take, queueing, connecting and writing included; past
    /// it the append fails with [`Error::Timeout`] (nothing written) or, when its
    /// commit was already sent, [`Error::OutcomeUnknown`]. Default: 10 s.
    pub append_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self { notify_channel: None, group_commit: None, append_timeout: Duration::from_secs(10) }
    }
}

/// The event store; cheap to clone (it shares the pool).
#[derive(Debug, Clone)]
pub struct EventStore {
    pool: Pool,
    options: Options,
    committer: Option<group_commit::Committer>,
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl EventStore {
    /// A store over `pool`. With [`Options::group_commit`], starts the committer tasks
    /// (call it inside a Tokio runtime); they stop when the last clone is dropped.
    pub fn new(pool: Pool, options: Options) -> Self {
        let committer = options.group_commit.map(|settings| {
            group_commit::Committer::start(
                pool.clone(),
                options.notify_channel.clone(),
                settings,
                options.append_timeout,
            )
        });
        Self { pool, options, committer }
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Applies the schema migrations that are not applied yet. Safe to run from
    /// several processes at once (they wait on an advisory lock).
    ///
    /// The migrations run without the pool's session limits (see the crate docs,
    /// *Schema*): no statement timeout, an unbounded wait for another replica's
    /// migration, and [`MIGRATION_LOCK_TIMEOUT`] for each lock a migration takes.
    pub async fn migrate(&self) -> Result<()> {
        // Out of the pool for good: its settings change, and it must not serve appends
        // afterwards. Closing it also releases the advisory lock.
        let mut client = deadpool_postgres::Object::take(self.pool.get().await?);
        // A fixed key for "event store migrations".
        let runner = embedded::migrations::runner();
        Ok(orders_postgres::migrate_on(
            &mut client,
            7401223001,
            &runner,
            "event store",
            Some(MIGRATION_LOCK_TIMEOUT),
        )
        .await?)
    }

    /// Loads a stream: its latest snapshot and the events after it.
    #[tracing::instrument(skip_all, fields(stream_id = %stream_id))]
    pub async fn load(&self, stream_id: Uuid) -> Result<Loaded> {
        let client = self.pool.get().await?;
        let snapshot_stmt = client.prepare_cached(include_str!("sql/load_snapshot.sql")).await?;
        let snapshot = client
            .query_opt(&snapshot_stmt, &[&stream_id])
            .await?
            .map(|row| Snapshot { version: to_u64(row.get(0)), state: row.get(1) });
        let after = snapshot.as_ref().map_or(0, |s| to_i64(s.version));
        let events = self.events_after(&client, stream_id, after).await?;
        Ok(Loaded { snapshot, events })
    }

    /// A stream's whole history, oldest first (empty when the stream does not exist).
    #[tracing::instrument(skip_all, fields(stream_id = %stream_id))]
    pub async fn history(&self, stream_id: Uuid) -> Result<Vec<RecordedEvent>> {
        let client = self.pool.get().await?;
        self.events_after(&client, stream_id, 0).await
    }

    async fn events_after(
        &self,
        client: &deadpool_postgres::Client,
        stream_id: Uuid,
        after: i64,
    ) -> Result<Vec<RecordedEvent>> {
        let stmt = client.prepare_cached(include_str!("sql/load_events.sql")).await?;
        let rows = client.query(&stmt, &[&stream_id, &after]).await?;
        Ok(rows
            .into_iter()
            .map(|row| RecordedEvent {
                version: to_u64(row.get(0)),
                event_id: row.get(1),
                event_type: row.get(2),
                payload: row.get(3),
                recorded_at: row.get(4),
            })
            .collect())
    }

    /// Appends events with their outbox rows, snapshot and idempotency record, in one
    /// transaction. Fails with [`Error::Conflict`] when the stream is no longer at
    /// `expected_version`, and with [`Error::DuplicateIdempotencyKey`] when a live
    /// record has the same key; nothing is written then.
    ///
    /// Appending again the very same events (same event ids) after a failure whose
    /// outcome was unknown ([`Error::OutcomeUnknown`], or any transient error) is safe:
    /// when the first try committed, the store recognises its own rows and answers
    /// `Ok` instead of a conflict.
    #[tracing::instrument(skip_all, fields(stream_id = %append.stream_id, expected = append.expected_version))]
    pub async fn append(&self, append: Append<'_>) -> Result<()> {
        check_versions(&append)?;
        let owned = transaction::OwnedAppend::from(&append);
        match &self.committer {
            Some(committer) => committer.append(owned).await,
            None => {
                let timeout = self.options.append_timeout;
                let deadline = tokio::time::Instant::now() + timeout;
                let channel = self.options.notify_channel.as_deref();
                let mut outcomes = commit::commit(&self.pool, channel, &[&owned], &[deadline], timeout).await;
                outcomes.pop().unwrap_or(Err(Error::ShutDown))
            }
        }
    }

    /// Appends waiting in the group-commit queue (always 0 without group commit): a
    /// measure of load, also exported as the gauge `eventstore_group_commit_queued`.
    pub fn queued_appends(&self) -> usize {
        self.committer.as_ref().map_or(0, group_commit::Committer::queued)
    }

    /// The live answer recorded under `key`, if any.
    pub async fn find_idempotency(&self, key: &str) -> Result<Option<StoredAnswer>> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(include_str!("sql/find_idempotency.sql")).await?;
        Ok(client.query_opt(&stmt, &[&key]).await?.map(|row| StoredAnswer {
            request_hash: row.get(0),
            status: u16::try_from(row.get::<_, i32>(1)).unwrap_or(500),
            response: row.get(2),
        }))
    }

    /// Records an answer on its own, without events (for a request that was refused
    /// for good, so that its retries get the same refusal).
    pub async fn record_answer(&self, record: &IdempotencyRecord) -> Result<()> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(include_str!("sql/insert_idempotency.sql")).await?;
        let status = i32::from(record.status);
        let ttl = record.ttl.as_secs_f64();
        match client
            .execute(&stmt, &[&record.key, &record.request_hash, &status, &record.response, &ttl])
            .await
        {
            Ok(0) => Err(Error::DuplicateIdempotencyKey(record.key.clone())),
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                Err(Error::DuplicateIdempotencyKey(record.key.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes expired idempotency records; returns how many.
    pub async fn purge_expired_idempotency(&self) -> Result<u64> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(include_str!("sql/purge_idempotency.sql")).await?;
        Ok(client.execute(&stmt, &[]).await?)
    }
}

fn check_versions(append: &Append<'_>) -> Result<()> {
    if append.events.is_empty() {
        return Err(Error::InvalidAppend("no events".into()));
    }
    for (i, event) in append.events.iter().enumerate() {
        let expected = append.expected_version + 1 + i as u64;
        if event.version != expected {
            return Err(Error::InvalidAppend(format!(
                "event {i} has version {}, expected {expected}",
                event.version
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_must_follow_the_expected_one() {
        let event =
            |version| NewEvent { event_id: Uuid::nil(), version, event_type: "E".into(), payload: vec![] };
        let events = [event(3), event(5)];
        let append = Append {
            stream_id: Uuid::nil(),
            expected_version: 2,
            events: &events,
            outbox: &[],
            snapshot: None,
            idempotency: None,
        };
        assert!(matches!(check_versions(&append), Err(Error::InvalidAppend(m)) if m.contains("version 5")));
    }
}
