//! Group commit: concurrent appends share one transaction.
//!
//! With many writers, the cost of an append is mostly its transaction: the round trips
//! of BEGIN and COMMIT and the WAL flush at commit (and, with a notification channel,
//! the global lock `NOTIFY` takes at commit). Appends sent to the store while a
//! committer is busy wait in a queue; the next free committer takes all that are
//! waiting (up to a bound) and writes them in one transaction: one multi-row insert per
//! table, one `NOTIFY`, one commit. Nothing waits on purpose: a lone append is written
//! at once, so batching only happens when there is a queue.
//!
//! Each append keeps its own outcome. The batch is tried whole first; when any of its
//! appends conflicts (a version already taken, a live idempotency key), the
//! transaction rolls back and every append of the batch is written on its own, so the
//! losers get [`Error::Conflict`] or [`Error::DuplicateIdempotencyKey`] exactly as
//! without batching, and the others commit.

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{Mutex, mpsc, oneshot};
use uuid::Uuid;

use crate::{
    Error, IdempotencyRecord, NewEvent, OutboxMessage, Result, Snapshot, append_one, outbox_shard, to_i64,
};

/// How appends are grouped; see the [module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct GroupCommit {
    /// Transactions in flight at once, each on its own connection.
    pub committers: usize,
    /// Most appends in one transaction.
    pub max_batch: usize,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self { committers: 4, max_batch: 64 }
    }
}

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

impl OwnedAppend {
    pub(crate) fn as_append(&self) -> crate::Append<'_> {
        crate::Append {
            stream_id: self.stream_id,
            expected_version: self.expected_version,
            events: &self.events,
            outbox: &self.outbox,
            snapshot: self.snapshot.as_ref(),
            idempotency: self.idempotency.as_ref(),
        }
    }
}

type Request = (OwnedAppend, oneshot::Sender<Result<()>>);

/// The queue in front of the committers.
#[derive(Debug, Clone)]
pub(crate) struct Committer {
    queue: mpsc::UnboundedSender<Request>,
}

impl Committer {
    /// Starts the committer tasks; they end when the last handle is dropped.
    pub(crate) fn start(pool: Pool, notify_channel: Option<String>, settings: GroupCommit) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..settings.committers.max(1) {
            let receiver = Arc::clone(&receiver);
            let pool = pool.clone();
            let channel = notify_channel.clone();
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&receiver, settings.max_batch.max(1)).await {
                    commit(&pool, channel.as_deref(), batch).await;
                }
            });
        }
        Self { queue }
    }

    /// Queues an append and waits for its outcome.
    pub(crate) async fn append(&self, append: OwnedAppend) -> Result<()> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send((append, reply))
            .map_err(|_| Error::InvalidAppend("the store is shut down".into()))?;
        outcome.await.map_err(|_| Error::InvalidAppend("the committer stopped".into()))?
    }
}

/// Waits for one request, then takes those already queued behind it.
async fn next_batch(receiver: &Mutex<mpsc::UnboundedReceiver<Request>>, max: usize) -> Option<Vec<Request>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut batch = vec![first];
    while batch.len() < max {
        match receiver.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
    Some(batch)
}

async fn commit(pool: &Pool, channel: Option<&str>, batch: Vec<Request>) {
    metrics::histogram!("eventstore_group_commit_size").record(batch.len() as f64);
    if batch.len() > 1 {
        match commit_together(pool, channel, &batch).await {
            Ok(()) => {
                for (_, reply) in batch {
                    let _ = reply.send(Ok(()));
                }
                return;
            }
            Err(error) => {
                // A conflict, or a failure of the whole transaction: write the appends
                // one by one, so that each gets its own, exact outcome.
                tracing::debug!(error = %error, size = batch.len(), "group commit fell back to single appends");
                metrics::counter!("eventstore_group_commit_fallbacks_total").increment(1);
            }
        }
    }
    for (append, reply) in batch {
        let outcome = append_one(pool, channel, &append.as_append()).await;
        let _ = reply.send(outcome);
    }
}

async fn commit_together(pool: &Pool, channel: Option<&str>, batch: &[Request]) -> Result<()> {
    for (append, _) in batch {
        crate::check_versions(&append.as_append())?;
    }
    // One key twice in a batch cannot be told apart in one statement: write them singly.
    let mut keys = std::collections::HashSet::new();
    if !batch.iter().filter_map(|(a, _)| a.idempotency.as_ref()).all(|r| keys.insert(r.key.as_str())) {
        return Err(Error::InvalidAppend("an idempotency key twice in one batch".into()));
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;

    let events = batch.iter().flat_map(|(a, _)| a.events.iter().map(move |e| (a.stream_id, e)));
    let (mut streams, mut versions, mut ids, mut types, mut payloads) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::<&[u8]>::new());
    for (stream, event) in events {
        streams.push(stream);
        versions.push(to_i64(event.version));
        ids.push(event.event_id);
        types.push(event.event_type.as_str());
        payloads.push(&event.payload);
    }
    let insert_events = tx.prepare_cached(include_str!("sql/insert_events_batch.sql")).await?;
    tx.execute(&insert_events, &[&streams, &versions, &ids, &types, &payloads]).await?;

    let outbox: Vec<&OutboxMessage> = batch.iter().flat_map(|(a, _)| a.outbox.iter()).collect();
    if !outbox.is_empty() {
        let shards: Vec<i32> = outbox.iter().map(|m| outbox_shard(&m.key)).collect();
        let topics: Vec<&str> = outbox.iter().map(|m| m.topic.as_str()).collect();
        let keys: Vec<&[u8]> = outbox.iter().map(|m| m.key.as_slice()).collect();
        let values: Vec<&[u8]> = outbox.iter().map(|m| m.payload.as_slice()).collect();
        let headers: Vec<serde_json::Value> = outbox.iter().map(|m| serde_json::json!(m.headers)).collect();
        let insert_outbox = tx.prepare_cached(include_str!("sql/insert_outbox.sql")).await?;
        tx.execute(&insert_outbox, &[&shards, &topics, &keys, &values, &headers]).await?;
    }

    let snapshots: Vec<(Uuid, &Snapshot)> =
        batch.iter().filter_map(|(a, _)| a.snapshot.as_ref().map(|s| (a.stream_id, s))).collect();
    if !snapshots.is_empty() {
        let streams: Vec<Uuid> = snapshots.iter().map(|(s, _)| *s).collect();
        let versions: Vec<i64> = snapshots.iter().map(|(_, s)| to_i64(s.version)).collect();
        let states: Vec<&[u8]> = snapshots.iter().map(|(_, s)| s.state.as_slice()).collect();
        let upsert = tx.prepare_cached(include_str!("sql/upsert_snapshots_batch.sql")).await?;
        tx.execute(&upsert, &[&streams, &versions, &states]).await?;
    }

    let records: Vec<&IdempotencyRecord> = batch.iter().filter_map(|(a, _)| a.idempotency.as_ref()).collect();
    if !records.is_empty() {
        let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
        let hashes: Vec<&[u8]> = records.iter().map(|r| r.request_hash.as_slice()).collect();
        let statuses: Vec<i32> = records.iter().map(|r| i32::from(r.status)).collect();
        let responses: Vec<&serde_json::Value> = records.iter().map(|r| &r.response).collect();
        let ttls: Vec<f64> = records.iter().map(|r| r.ttl.as_secs_f64()).collect();
        let insert = tx.prepare_cached(include_str!("sql/insert_idempotency_batch.sql")).await?;
        let inserted = tx.execute(&insert, &[&keys, &hashes, &statuses, &responses, &ttls]).await?;
        if inserted != records.len() as u64 {
            return Err(Error::InvalidAppend("a live idempotency key in the batch".into()));
        }
    }
    if let Some(channel) = channel {
        tx.execute("SELECT pg_notify($1, '')", &[&channel]).await?;
    }
    tx.commit().await?;
    Ok(())
}
