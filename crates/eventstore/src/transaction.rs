//! One try of one transaction that writes a group of appends: one multi-row insert
//! per table, one `NOTIFY`, one commit; and the look-up that tells, after a unique
//! violation, which appends lost and which had already committed.
//!
//! Idempotency records are inserted first: a request that races its own retry (two
//! requests with one key) waits there for the other's transaction to end, then finds
//! the key taken and replays the recorded answer, instead of meeting the other's
//! events and being re-run on a state that already includes its own effect.
//!
//! Every multi-row insert writes its rows sorted (idempotency keys by key, events by
//! stream and version, snapshots by stream), so that any two such transactions take
//! their row locks in one global order: two groups over the same streams given in
//! opposite orders (two committers, two replicas) wait on each other in turn and
//! never deadlock. The outbox rows keep the order of the appends (they have no unique
//! key to wait on, and a relay reads them in `id` order).

use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::{Object, Pool};
use tokio::time::{Instant, timeout_at};
use uuid::Uuid;

use crate::{
    Error, Failure, IdempotencyRecord, NewEvent, OutboxMessage, Snapshot, aborted_by_concurrency, classify,
    to_i64,
};

/// An append that owns its data, to cross into a committer task.
#[derive(Debug, Clone)]
pub(crate) struct OwnedAppend {
    pub(crate) stream_id: Uuid,
    pub(crate) expected_version: u64,
    pub(crate) events: Vec<NewEvent>,
    pub(crate) outbox: Vec<OutboxMessage>,
    pub(crate) snapshot: Option<Snapshot>,
    pub(crate) idempotency: Option<IdempotencyRecord>,
}

impl From<&crate::Append<'_>> for OwnedAppend {
    fn from(append: &crate::Append<'_>) -> Self {
        Self {
            stream_id: append.stream_id,
            expected_version: append.expected_version,
            events: append.events.to_vec(),
            outbox: append.outbox.to_vec(),
            snapshot: append.snapshot.cloned(),
            idempotency: append.idempotency.cloned(),
        }
    }
}

impl OwnedAppend {
    pub(crate) fn conflict(&self) -> Error {
        Error::Conflict { stream_id: self.stream_id, expected: self.expected_version }
    }

    pub(crate) fn duplicate_key(&self) -> Error {
        Error::DuplicateIdempotencyKey(self.idempotency.as_ref().map(|r| r.key.clone()).unwrap_or_default())
    }
}

/// How one try failed.
#[derive(Debug)]
pub(crate) enum TryError {
    /// A unique constraint refused a row: some append lost a race, or met rows that an
    /// earlier try of its own committed. Nothing was written by this try.
    Unique(Error),
    /// The commit was sent and its answer lost: it may have taken effect.
    CommitUnknown(Error),
    /// The deadline passed; `commit_sent` says whether the commit may have taken effect.
    Deadline { commit_sent: bool },
    /// The server aborted the transaction to break a deadlock, or for a serialization
    /// failure, with a concurrent one: nothing was written. Not an outage: the appends
    /// of a group are tried again one at a time.
    Concurrency(Error),
    /// The database is unreachable or the connection broke before the commit: nothing
    /// was written.
    Transient(Error),
    /// Anything else (bad data, a bug): nothing was written.
    Permanent(Error),
}

/// A failed statement, classified; `single` names the append when the transaction
/// carries only one, so that a unique violation gets its exact typed error.
fn statement_error(error: tokio_postgres::Error, single: Option<&OwnedAppend>) -> TryError {
    match classify(&error) {
        Failure::UniqueViolation => {
            let constraint = error.as_db_error().and_then(|db| db.constraint()).unwrap_or_default();
            match (single, constraint) {
                (Some(append), "events_pkey") => TryError::Unique(append.conflict()),
                (Some(append), "idempotency_records_pkey") => TryError::Unique(append.duplicate_key()),
                _ => TryError::Unique(error.into()),
            }
        }
        Failure::Transient if aborted_by_concurrency(&error) => TryError::Concurrency(error.into()),
        Failure::Transient => TryError::Transient(error.into()),
        Failure::Permanent => TryError::Permanent(error.into()),
    }
}

/// Writes `group` in one transaction, giving up at `deadline`.
pub(crate) async fn write(
    pool: &Pool,
    channel: Option<&str>,
    group: &[&OwnedAppend],
    deadline: Instant,
) -> Result<(), TryError> {
    let mut client = match timeout_at(deadline, pool.get()).await {
        Err(_) => return Err(TryError::Deadline { commit_sent: false }),
        Ok(Err(e)) => return Err(TryError::Transient(e.into())),
        Ok(Ok(client)) => client,
    };
    let commit_sent = AtomicBool::new(false);
    match timeout_at(deadline, run(&mut client, channel, group, &commit_sent)).await {
        Ok(outcome) => outcome,
        Err(_) => {
            // Abandoned mid-transaction (the dropped transaction queued its ROLLBACK):
            // close the connection rather than hand it on with a statement running.
            // A server backend waiting on a lock does not notice its client leave: it
            // would keep this try's rows, and the appends tried again would wait on
            // them. So the statement is cancelled too (best effort: over a plain
            // connection, as the pools of `orders-postgres` make them).
            let cancel = client.cancel_token();
            tokio::spawn(async move {
                if let Err(e) = cancel.cancel_query(tokio_postgres::NoTls).await {
                    tracing::debug!(error = %e, "cancelling an abandoned append transaction failed");
                }
            });
            drop(Object::take(client));
            Err(TryError::Deadline { commit_sent: commit_sent.load(Ordering::Acquire) })
        }
    }
}

async fn run(
    client: &mut Object,
    channel: Option<&str>,
    group: &[&OwnedAppend],
    commit_sent: &AtomicBool,
) -> Result<(), TryError> {
    let single = match group {
        [append] => Some(*append),
        _ => None,
    };
    let fail = |e| statement_error(e, single);
    let tx = client.transaction().await.map_err(fail)?;

    let records: Vec<&IdempotencyRecord> = group.iter().filter_map(|a| a.idempotency.as_ref()).collect();
    if !records.is_empty() {
        let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
        let hashes: Vec<&[u8]> = records.iter().map(|r| r.request_hash.as_slice()).collect();
        let statuses: Vec<i32> = records.iter().map(|r| i32::from(r.status)).collect();
        let responses: Vec<&serde_json::Value> = records.iter().map(|r| &r.response).collect();
        let ttls: Vec<f64> = records.iter().map(|r| r.ttl.as_secs_f64()).collect();
        let insert =
            tx.prepare_cached(include_str!("sql/insert_idempotency_batch.sql")).await.map_err(fail)?;
        let inserted =
            tx.execute(&insert, &[&keys, &hashes, &statuses, &responses, &ttls]).await.map_err(fail)?;
        if inserted != records.len() as u64 {
            let error = match single {
                Some(append) => append.duplicate_key(),
                None => Error::DuplicateIdempotencyKey(keys.join(", ")),
            };
            return Err(TryError::Unique(error));
        }
    }

    let events = group.iter().flat_map(|a| a.events.iter().map(move |e| (a.stream_id, e)));
    let (mut streams, mut versions, mut ids, mut types, mut payloads) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::<&[u8]>::new());
    for (stream, event) in events {
        streams.push(stream);
        versions.push(to_i64(event.version));
        ids.push(event.event_id);
        types.push(event.event_type.as_str());
        payloads.push(&event.payload);
    }
    let insert_events = tx.prepare_cached(include_str!("sql/insert_events_batch.sql")).await.map_err(fail)?;
    tx.execute(&insert_events, &[&streams, &versions, &ids, &types, &payloads]).await.map_err(fail)?;

    let outbox: Vec<&OutboxMessage> = group.iter().flat_map(|a| a.outbox.iter()).collect();
    orders_outbox::write(&tx, &outbox).await.map_err(fail)?;

    let snapshots: Vec<(Uuid, &Snapshot)> =
        group.iter().filter_map(|a| a.snapshot.as_ref().map(|s| (a.stream_id, s))).collect();
    if !snapshots.is_empty() {
        let streams: Vec<Uuid> = snapshots.iter().map(|(s, _)| *s).collect();
        let versions: Vec<i64> = snapshots.iter().map(|(_, s)| to_i64(s.version)).collect();
        let states: Vec<&[u8]> = snapshots.iter().map(|(_, s)| s.state.as_slice()).collect();
        let upsert = tx.prepare_cached(include_str!("sql/upsert_snapshots_batch.sql")).await.map_err(fail)?;
        tx.execute(&upsert, &[&streams, &versions, &states]).await.map_err(fail)?;
    }

    if let Some(channel) = channel {
        tx.execute("SELECT pg_notify($1, '')", &[&channel]).await.map_err(fail)?;
    }
    commit_sent.store(true, Ordering::Release);
    tx.commit().await.map_err(|e| {
        if e.as_db_error().is_some() {
            // The server answered: the transaction was rolled back.
            fail(e)
        } else {
            TryError::CommitUnknown(e.into())
        }
    })
}

/// Why one append of a failed transaction failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Its events are stored: an earlier try committed.
    Committed,
    /// Another writer holds its first version.
    VersionTaken,
    /// A live record holds its idempotency key.
    KeyTaken,
    /// Nothing stands in its way.
    Free,
}

/// The verdict on each append of `group`, in order, by `deadline`.
pub(crate) async fn verdicts(
    pool: &Pool,
    group: &[&OwnedAppend],
    deadline: Instant,
) -> Result<Vec<Verdict>, TryError> {
    let look = async {
        let client = pool.get().await.map_err(|e| TryError::Transient(e.into()))?;
        let stmt = client
            .prepare_cached(include_str!("sql/verdicts.sql"))
            .await
            .map_err(|e| statement_error(e, None))?;
        let first = |a: &OwnedAppend| a.events.first().map(|e| (e.event_id, to_i64(e.version)));
        let ids: Vec<Uuid> = group.iter().map(|a| first(a).map_or(Uuid::nil(), |(id, _)| id)).collect();
        let streams: Vec<Uuid> = group.iter().map(|a| a.stream_id).collect();
        let versions: Vec<i64> = group.iter().map(|a| first(a).map_or(0, |(_, v)| v)).collect();
        let keys: Vec<Option<&str>> =
            group.iter().map(|a| a.idempotency.as_ref().map(|r| r.key.as_str())).collect();
        let rows = client
            .query(&stmt, &[&ids, &streams, &versions, &keys])
            .await
            .map_err(|e| statement_error(e, None))?;
        Ok(rows
            .iter()
            .map(|row| match (row.get::<_, bool>(0), row.get::<_, bool>(1), row.get::<_, bool>(2)) {
                (true, _, _) => Verdict::Committed,
                // A taken key first: the request was answered already, replay that.
                (false, _, true) => Verdict::KeyTaken,
                (false, true, false) => Verdict::VersionTaken,
                (false, false, false) => Verdict::Free,
            })
            .collect())
    };
    match timeout_at(deadline, look).await {
        Ok(verdicts) => verdicts,
        Err(_) => Err(TryError::Deadline { commit_sent: false }),
    }
}
