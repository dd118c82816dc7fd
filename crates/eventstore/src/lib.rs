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
//! # Schema
//!
//! Migrations live in `migrations/` (refinery, applied by [`EventStore::migrate`] under
//! an advisory lock so that replicas starting together do not race). Queries live in
//! `src/sql/` and run as cached prepared statements. `V3` adds `outbox_quarantine`,
//! where a relay sets aside a row it could never publish (see `orders-outbox`).
//!
//! With the feature `test-support`, [`test_support`] appends test events the way a
//! service does, for the tests of the crates reading the outbox.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, PoolError};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

mod group_commit;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use group_commit::GroupCommit;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Number of outbox shards; part of the schema's contract with relays.
pub const OUTBOX_SHARDS: i32 = 64;

/// What can go wrong; see [`Error::is_transient`] for what to retry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another writer appended to the stream since it was read at `expected`.
    /// Reload and re-check the rules, or report the conflict.
    #[error("stream {stream_id} is no longer at version {expected}")]
    Conflict {
        /// The stream.
        stream_id: Uuid,
        /// The version the append expected.
        expected: u64,
    },
    /// A live idempotency record with this key exists (a concurrent request with the
    /// same key committed first). Look it up and replay its answer.
    #[error("idempotency key `{0}` is already recorded")]
    DuplicateIdempotencyKey(String),
    /// The append is malformed (versions not contiguous after the expected one): a bug
    /// in the caller.
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// No connection could be had: the database is down or overloaded. Retry later.
    #[error("database unavailable: {0}")]
    Unavailable(#[from] PoolError),
    /// A statement failed.
    #[error("database error: {}", describe(.0))]
    Database(#[from] tokio_postgres::Error),
    /// Applying the schema migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
}

impl Error {
    /// Whether retrying the same operation later may succeed (the database was
    /// unreachable or the connection broke), as opposed to a conflict or a bug.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::Database(e) => e.is_closed() || e.as_db_error().is_none(),
            _ => false,
        }
    }
}

/// The server's message and SQLSTATE when there is one (tokio-postgres' own
/// `Display` says only "db error").
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

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

/// A record for the outbox, published by a relay as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Destination topic.
    pub topic: String,
    /// Record key; also decides the outbox shard.
    pub key: Vec<u8>,
    /// Record value.
    pub payload: Vec<u8>,
    /// Record headers (for example `traceparent`).
    pub headers: BTreeMap<String, String>,
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
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Channel to `NOTIFY` in every append transaction (`None`: no notification).
    pub notify_channel: Option<String>,
    /// Let concurrent appends share transactions ([`group_commit`]); `None`: one
    /// transaction per append.
    pub group_commit: Option<GroupCommit>,
}

/// The stable shard of an outbox key: FNV-1a over the bytes, modulo [`OUTBOX_SHARDS`].
pub fn outbox_shard(key: &[u8]) -> i32 {
    let hash = key.iter().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193));
    i32::try_from(hash % OUTBOX_SHARDS.unsigned_abs()).unwrap_or(0)
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
            group_commit::Committer::start(pool.clone(), options.notify_channel.clone(), settings)
        });
        Self { pool, options, committer }
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Applies the schema migrations that are not applied yet. Safe to run from
    /// several processes at once (they wait on an advisory lock).
    pub async fn migrate(&self) -> Result<()> {
        let mut client = self.pool.get().await?;
        let client: &mut tokio_postgres::Client = &mut client;
        // A fixed key for "event store migrations"; released with the session too.
        client.execute("SELECT pg_advisory_lock(7401223001)", &[]).await?;
        let report = embedded::migrations::runner().run_async(client).await;
        client.execute("SELECT pg_advisory_unlock(7401223001)", &[]).await?;
        let report = report?;
        for migration in report.applied_migrations() {
            tracing::info!(migration = %migration, "applied migration");
        }
        Ok(())
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
    #[tracing::instrument(skip_all, fields(stream_id = %append.stream_id, expected = append.expected_version))]
    pub async fn append(&self, append: Append<'_>) -> Result<()> {
        check_versions(&append)?;
        match &self.committer {
            Some(committer) => {
                committer
                    .append(group_commit::OwnedAppend {
                        stream_id: append.stream_id,
                        expected_version: append.expected_version,
                        events: append.events.to_vec(),
                        outbox: append.outbox.to_vec(),
                        snapshot: append.snapshot.cloned(),
                        idempotency: append.idempotency.cloned(),
                    })
                    .await
            }
            None => append_one(&self.pool, self.options.notify_channel.as_deref(), &append).await,
        }
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

/// One append in its own transaction.
pub(crate) async fn append_one(pool: &Pool, notify_channel: Option<&str>, append: &Append<'_>) -> Result<()> {
    check_versions(append)?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let insert_events = tx.prepare_cached(include_str!("sql/insert_event.sql")).await?;
    let versions: Vec<i64> = append.events.iter().map(|e| to_i64(e.version)).collect();
    let ids: Vec<Uuid> = append.events.iter().map(|e| e.event_id).collect();
    let types: Vec<&str> = append.events.iter().map(|e| e.event_type.as_str()).collect();
    let payloads: Vec<&[u8]> = append.events.iter().map(|e| e.payload.as_slice()).collect();
    tx.execute(&insert_events, &[&append.stream_id, &versions, &ids, &types, &payloads])
        .await
        .map_err(|e| classify(e, append))?;

    if !append.outbox.is_empty() {
        let insert_outbox = tx.prepare_cached(include_str!("sql/insert_outbox.sql")).await?;
        let shards: Vec<i32> = append.outbox.iter().map(|m| outbox_shard(&m.key)).collect();
        let topics: Vec<&str> = append.outbox.iter().map(|m| m.topic.as_str()).collect();
        let keys: Vec<&[u8]> = append.outbox.iter().map(|m| m.key.as_slice()).collect();
        let values: Vec<&[u8]> = append.outbox.iter().map(|m| m.payload.as_slice()).collect();
        let headers: Vec<serde_json::Value> =
            append.outbox.iter().map(|m| serde_json::json!(m.headers)).collect();
        tx.execute(&insert_outbox, &[&shards, &topics, &keys, &values, &headers]).await?;
    }
    if let Some(snapshot) = append.snapshot {
        let upsert = tx.prepare_cached(include_str!("sql/upsert_snapshot.sql")).await?;
        tx.execute(&upsert, &[&append.stream_id, &to_i64(snapshot.version), &snapshot.state]).await?;
    }
    if let Some(record) = append.idempotency {
        let insert = tx.prepare_cached(include_str!("sql/insert_idempotency.sql")).await?;
        let status = i32::from(record.status);
        let ttl = record.ttl.as_secs_f64();
        let inserted = tx
            .execute(&insert, &[&record.key, &record.request_hash, &status, &record.response, &ttl])
            .await
            .map_err(|e| classify(e, append))?;
        if inserted == 0 {
            return Err(Error::DuplicateIdempotencyKey(record.key.clone()));
        }
    }
    if let Some(channel) = notify_channel {
        tx.execute("SELECT pg_notify($1, '')", &[&channel]).await?;
    }
    tx.commit().await.map_err(|e| classify(e, append))?;
    Ok(())
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

/// Turns unique violations into the typed errors they mean.
fn classify(error: tokio_postgres::Error, append: &Append<'_>) -> Error {
    let Some(db) = error.as_db_error() else { return error.into() };
    if db.code() != &SqlState::UNIQUE_VIOLATION {
        return error.into();
    }
    match db.constraint() {
        Some("events_pkey") => {
            Error::Conflict { stream_id: append.stream_id, expected: append.expected_version }
        }
        Some("idempotency_records_pkey") => {
            Error::DuplicateIdempotencyKey(append.idempotency.map(|r| r.key.clone()).unwrap_or_default())
        }
        _ => error.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_in_range() {
        let key = b"0196f3b2-8c1e-7a00-9d4e-000000000001";
        assert_eq!(outbox_shard(key), outbox_shard(key));
        for i in 0..1000u32 {
            let shard = outbox_shard(&i.to_be_bytes());
            assert!((0..OUTBOX_SHARDS).contains(&shard));
        }
        // Pinned: relays and writers of other versions must agree on it.
        assert_eq!(outbox_shard(b""), (0x811c_9dc5_u32 % 64) as i32);
    }

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
