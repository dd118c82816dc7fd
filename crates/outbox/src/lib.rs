//! A transactional-outbox relay: publishes the rows that writers commit to a PostgreSQL
//! `outbox` table to Kafka, in order per key, losing none, with any number of relay
//! replicas running at once.
//!
//! The crate is generic: a row is a Kafka-ready record (topic, key, payload, string
//! headers) and the relay never looks inside it. It expects this table (the one
//! `orders-eventstore` creates; any writer that fills it the same way works):
//!
//! ```sql
//! CREATE TABLE outbox (
//!     id         BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
//!     shard      INTEGER     NOT NULL,  -- stable hash of key, 0 .. shards
//!     topic      TEXT        NOT NULL,
//!     key        BYTEA       NOT NULL,
//!     payload    BYTEA       NOT NULL,
//!     headers    JSONB       NOT NULL DEFAULT '{}',  -- object of string -> string
//!     created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
//! );
//! CREATE INDEX outbox_shard_id ON outbox (shard, id);
//! ```
//!
//! and, for the rows that can never be published, a quarantine with the same columns
//! plus why and when (`orders-eventstore` creates it too, migration `V3`):
//!
//! ```sql
//! CREATE TABLE outbox_quarantine (
//!     id BIGINT PRIMARY KEY, shard INTEGER NOT NULL, topic TEXT NOT NULL,
//!     key BYTEA NOT NULL, payload BYTEA NOT NULL, headers JSONB NOT NULL,
//!     created_at TIMESTAMPTZ NOT NULL,
//!     quarantined_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
//!     attempts INTEGER NOT NULL, reason TEXT NOT NULL
//! );
//! CREATE INDEX outbox_quarantine_shard_key ON outbox_quarantine (shard, key);
//! ```
//!
//! A writer of its own (a service with an outbox and no event store) gets both tables
//! from [`migrate`] and inserts its rows with [`write`] inside the transaction of its
//! effect; [`outbox_shard`] is the shard every writer must use.
//!
//! and of its writers one promise: **a key's next row is inserted only after its
//! previous row committed** (an event store gives this for free: appending version
//! `n + 1` needs the committed version `n` first). So one key's rows have increasing
//! ids, and when a key's row is visible, all of that key's earlier rows are visible too
//! (or already deleted).
//!
//! # How it works
//!
//! [`Relay::run`] runs three kinds of tasks in one process:
//!
//! - **The lease keeper** holds one dedicated PostgreSQL session (not a
//!   pooled connection). On it the relay takes a shared advisory lock that marks it a
//!   *member*, and one exclusive advisory lock per shard it *owns*. It also `LISTEN`s on
//!   the notify channel there and wakes the workers on every notification.
//! - **Workers** (`workers` of them, 1 by default; shard `s` belongs to worker
//!   `s % workers`; each with a Kafka producer of its own, so that a record the broker
//!   refuses stops only its own worker's producer and the broker's verdict on a record
//!   batch concerns only that worker's rows) loop: read the oldest rows of their owned shards (`ORDER BY id
//!   LIMIT batch_size`), hand them to the producer in id order, wait for every
//!   acknowledgement, then delete the acknowledged rows in one statement. When a batch
//!   is full (a backlog), the next one is read and handed to the producer while the
//!   previous one waits for its acknowledgements (a pipeline two batches deep; the read
//!   leaves out the ids of the previous batch's rows handed to the producer). A batch
//!   the producer refused a row of is never pipelined: the producer was not handed that
//!   row nor the rows after it, so the next read must start from them again, after the
//!   batch is finished (a read past them would publish later rows of their keys first).
//!   They sleep until a notification, the poll interval (the fallback for a missed
//!   notification) or shutdown. A worker's run over its shards ends as soon as its
//!   share of the shards changes (a generation counter per worker, bumped on every
//!   shard taken, handed back or lost), so that shards taken over from a dead relay are
//!   read at once, even while the worker's own shards have a backlog.
//! - **The backlog gauge** counts the rows waiting and the age of the oldest.
//!
//! ## Shards and their owners
//!
//! The outbox is split into `shards` (64 in `orders-eventstore`) by a stable hash of the
//! key. A shard is owned by the session holding the advisory lock `(lock_namespace,
//! shard)`; PostgreSQL grants it to one session at a time and releases it when that
//! session ends, for whatever reason (clean stop, `SIGKILL`, a broken connection).
//! Every `rebalance_interval` each relay reads `pg_locks` to learn the number of
//! members `m` and which shards are held, then aims at `ceil(shards / m)` shards: it
//! takes free shards (`pg_try_advisory_lock`, never waiting) while it has fewer and
//! hands back shards (between two batches of that shard) while it has more. A dead
//! relay's shards are free as soon as PostgreSQL sees its session end (at once for a
//! killed process: the kernel closes its socket; for a silent network partition, after
//! the session's TCP keepalives or user timeout give up, which the relay sets on the
//! server's end of its lease session too: [`SessionKeepalive`], about 30 s by default
//! rather than the two hours of common system defaults), and a live relay takes them
//! at its next rebalance. A relay that loses its session forgets all its shards at once and
//! reconnects with backoff. Session advisory locks need a direct connection (or a
//! session-mode pooler), not a transaction-mode PgBouncer.
//!
//! ## Why no row is skipped
//!
//! There is no cursor. A row leaves the table only by the relay's `DELETE` of ids whose
//! publication the broker acknowledged, and every read takes the *oldest remaining*
//! rows of a shard (leaving out only the rows of the batch still in flight, by their
//! ids, which are not skipped but already handed to the producer, and the rows of keys
//! with a quarantined row, which wait until it is back or discarded, or held back by
//! the worker until a refused row's next attempt). A row that
//! commits after rows with larger ids (two transactions that took ids 7 and 8 and
//! committed in the order 8, 7) is simply not visible to one
//! read and still there for the next: the read after its commit returns it, because
//! nothing but an acknowledged publication removes it. A reader that remembered "the
//! last id seen" would have moved past 7 after publishing 8 and lost it.
//!
//! ## Why one key stays in order, even with several replicas
//!
//! `FOR UPDATE SKIP LOCKED` is not used: it lets two relays take versions 1 and 2 of
//! one key and race. Here a read never skips a row, which gives the property on its own:
//!
//! > Take a key's rows `r1 < r2`. The first copy of `r2` that reaches the topic was
//! > produced by a batch whose read saw `r2`. When that read ran, `r1` had committed
//! > (the writers' promise). Either `r1` was still in the table and not in flight: the
//! > read returned it too (a read returns a prefix, in id order, of each shard's
//! > remaining rows) and the same producer sent it before `r2` to the same partition,
//! > where the idempotent producer keeps their order. Or `r1` was in the previous batch,
//! > still in flight: the same producer was handed it before `r2` (a pipelined batch
//! > goes on the producer of the batch before it, even when that producer was replaced
//! > meanwhile: a replaced producer fails both, which is safe), same conclusion. Or
//! > `r1` was gone: it was deleted only after the broker acknowledged a copy of it,
//! > which therefore sits earlier in the partition log than anything produced
//! > afterwards. Or `r1` was in the quarantine: then the read left `r2` out (the
//! > quarantine and the key's reads exclude each other in one snapshot), so this case
//! > does not arise; a re-queued `r1` is back with its own id, before `r2`. Or `r1`'s
//! > key was held back by the worker (a refused `r1` waiting for its next attempt):
//! > the read left `r2` out too. In every
//! > case a copy of `r1` precedes the first `r2` (unless `r1` was discarded by hand).
//! > The producer is handed `r1` and `r2` in that order only if it took `r1`: a batch
//! > stops at the first row the producer refuses (or the first row sent alone that
//! > fails), and is finished before the next read.
//!
//! So ownership is not what makes the order right; it makes the work efficient (one
//! relay per shard, no duplicate publications in normal operation). During a hand-over
//! (a relay that lost its session but has a batch in flight, or a stalled process
//! resuming) two relays may publish the same rows: the topic then holds duplicates,
//! never a reordering of first copies. Consumers must tolerate duplicates anyway
//! (Kafka is at least once); one that keeps the highest version seen per key drops them.
//!
//! The producer is forced to `enable.idempotence=true`, `acks=all`,
//! `message.timeout.ms=0` (no local delivery timeout) and
//! `enable.gapless.guarantee=true`. With a finite timeout, librdkafka can fail version
//! 1 at its deadline while version 2, queued a moment later, still gets through once
//! the broker is back, which would put 2 before 1 on the topic. With no timeout a
//! message is only failed for good reasons (the topic does not exist, the record is too
//! large or invalid, a fatal producer error). When the broker fails a batch of records
//! for good, an idempotent producer without the gapless guarantee would go on with the
//! records queued after it, version 2 of a key could be published while version 1
//! failed; with the guarantee the producer stops instead (a fatal error), the records
//! after the gap fail too, and the relay creates a new producer and tries again from
//! the oldest row. The producer is replaced by a compare-and-swap under one lock (only
//! the first of several callers failing on the same fatal error replaces it), and a
//! pipelined batch goes on its predecessor's producer, so a worker's two batches in
//! flight never end up on two healthy producers. The producer also keeps one request
//! in flight per broker (`max.in.flight.requests.per.connection=1`): a broker that
//! does not know a producer id yet (a fresh producer's first request to a partition)
//! accepts whatever sequence follows a refused request, so with several requests in
//! flight the ones behind a refused first request were written (v2 before v1) before
//! the gapless guarantee could stop the producer; seen in the tests as a consumer
//! reading version 3 of a key right after version 1, about one run in three. It costs
//! throughput (one round trip per broker at a time), not yet re-measured.
//! That costs a new producer per refused record and attempt, which
//! only happens for records that end in the quarantine: worth it for the order per
//! key. A record the producer refuses before sending it (too large for its
//! `message.max.bytes`, an invalid topic name) stops the batch there: the rows after it
//! are not handed to the producer. Keys go to partitions by librdkafka's partitioner,
//! so all relays must use the same `partitioner` setting and a topic's partition count
//! must not change while rows are in flight.
//!
//! ## Rows that can never be published
//!
//! A row that fails for a reason of its own (the topic does not exist or may not be
//! written, the record is too large or invalid) would fail for ever, and hold up every
//! later row of its worker's shards. A row the producer refuses before sending it for
//! a reason it meets on every attempt (larger than the producer's `message.max.bytes`,
//! a topic name that is invalid or that the cluster's metadata says does not exist) is
//! quarantined at its first attempt. Any other such failure (the broker refused the
//! record) is charged to a row only when the broker's verdict is that row's own: the
//! broker refuses a whole record batch of a partition with one error code, so when
//! several rows fail for a record's reason at once, none is charged and each of them is
//! next **sent alone** (after every row handed before it is acknowledged, and
//! acknowledged itself before the next row is handed), so that an innocent row batched
//! with an oversized one is published and only the row at fault counts an attempt. (The
//! failures of other kinds beside it, such as the rows failed by the gapless guarantee
//! stopping the producer, are its consequences and are retried.) The charged row's
//! **key is held back** in the worker's memory with a backoff of its own
//! (`retry_backoff_min` doubled per attempt up to `retry_backoff_max`): the reads
//! leave that key's rows out
//! until its next attempt, and the worker goes on with every other key at once, so one
//! refused row does not stall its worker's shards while it builds up its attempts.
//! After `quarantine_after` attempts ([`RelayOptions::quarantine_after`]) the relay
//! moves the row to `outbox_quarantine` with the reason and the attempts (one
//! statement), counts it in
//! [`metric::QUARANTINED`] (and [`metric::QUARANTINE_ROWS`] shows the quarantine's
//! size), logs it at ERROR (a person must look), and goes on.
//! Readiness is not affected by such failures, before or after the quarantine: one bad
//! record is not a broken relay. Reads leave out every row whose key has a row in the
//! quarantine (same shard and key), so **later rows of that key wait** in the outbox
//! while every other key goes on. [`Quarantine`] lists the quarantined rows (with the
//! rows waiting behind each), **re-queues** them (back into the outbox with their own
//! ids, so each goes before the rows of its key that waited behind it, in the same
//! statement that takes it out of the quarantine) or **discards** them (the waiting
//! rows go on), and wakes the relays. Attempts are counted in memory: a restart or a
//! hand-over of the shard counts again from zero, and releases held-back keys. Order
//! per key holds within a topic: a later row of the same key addressed to *another* topic may already be published
//! when the first one fails.
//!
//! Other failures (a fatal producer error, the broker unreachable) count no attempt:
//! they are retried with backoff for as long as they last, logged at ERROR, and the
//! relay reports not ready once publications have failed or waited for acknowledgements
//! longer than `stall_threshold`.
//!
//! ## Broker or database down
//!
//! A batch whose acknowledgements do not come (broker down) is simply awaited:
//! librdkafka retries and reconnects with its own backoff, the rows stay, the status
//! turns not ready after `stall_threshold`, and the batch completes when the broker is
//! back. A failed read or delete (database down) is retried with exponential backoff;
//! rows whose delete failed stay and are published again later (duplicates, not
//! losses). Losing the lease session drops ownership until PostgreSQL is back.
//!
//! ## Shutdown
//!
//! When the token given to [`Relay::run`] is cancelled, workers start no new batch. The
//! batches in flight get up to `drain_timeout` to receive their acknowledgements; their
//! acknowledged rows are deleted (without waiting for the WAL flush: a delete lost in a
//! database crash only means a duplicate), and rows whose outcome is unknown are left in the
//! table for the next owner (a possible duplicate, never a loss). Only then are the
//! shards released, by closing the lease session. A row is never deleted unless the
//! broker acknowledged it.
//!
//! # Metrics
//!
//! Recorded with the `metrics` crate (see [`metric`] for the names): backlog rows and
//! age of the oldest row, rows published (a counter: its rate is the publish rate),
//! publish latency from the row's creation (its insert, inside the writer's
//! transaction; so it slightly overstates commit-to-ack) to the broker's
//! acknowledgement, batches, errors by stage, rows quarantined, shards owned and
//! members seen.

mod lease;
pub mod metric;
mod options;
mod publish;
mod quarantine;
mod relay;
mod status;
mod store;
mod worker;
mod write;

pub use options::{RelayOptions, SessionKeepalive};
pub use orders_postgres::MigrateError;
pub use publish::producer_config;
pub use quarantine::{Quarantine, QuarantinedRow, Selection};
pub use relay::Relay;
pub use status::RelayStatus;
pub use write::{OUTBOX_SHARDS, OutboxMessage, migrate, outbox_shard, write};

/// What can go wrong in the relay's own set-up (its loops retry everything else) and in
/// the operations on the [`Quarantine`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kafka producer could not be created from its configuration: fix the
    /// configuration.
    #[error("kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The options are inconsistent: fix the configuration.
    #[error("invalid relay options: {0}")]
    Options(String),
    /// A background task of the relay panicked: a bug.
    #[error("relay task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// No database connection for a [`Quarantine`] operation: retry later.
    #[error("no database connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A [`Quarantine`] statement failed (nothing changed): retry, or check the schema.
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `error` and its sources, `: `-separated (the driver's errors keep the useful part in
/// their source).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}
