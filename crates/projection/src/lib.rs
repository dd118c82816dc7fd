//! Exactly-once projections from a Kafka topic into PostgreSQL.
//!
//! A *projection* turns the records of one topic into tables (a read model). Kafka
//! delivers at least once; this crate makes the *effect* happen once: every batch of
//! one partition is applied in one PostgreSQL transaction that also stores the
//! partition's position (the offset of the next record), and the consumer starts from
//! the stored positions, never from Kafka's committed offsets. A crash anywhere loses
//! nothing and applies nothing twice: either the batch and its position committed, or
//! neither did and the batch is read again.
//!
//! The crate is generic: a record is bytes with a key, headers and a timestamp, and a
//! [`Handler`] decides what they mean and writes its tables through the transaction it
//! is given. It knows nothing of what the records are.
//!
//! # The positions table
//!
//! It expects this table, in the schema the pool's `search_path` points at (the
//! projection's own schema, so that positions move with the read model when a rebuilt
//! one is swapped in). Its DDL is [`POSITIONS_TABLE_SQL`]:
//!
//! ```sql
//! CREATE TABLE consumer_positions (
//!     projection  TEXT        NOT NULL,
//!     topic       TEXT        NOT NULL,
//!     partition   INTEGER     NOT NULL,
//!     next_offset BIGINT      NOT NULL CHECK (next_offset >= 0),
//!     updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
//!     PRIMARY KEY (projection, topic, partition)
//! );
//! ```
//!
//! # How a batch is applied
//!
//! [`Projection`] polls up to [`Settings::max_batch`] records at a time, waiting at most
//! [`Settings::max_wait`] after the first one, files them by partition, and applies each
//! partition's waiting records (at most `max_batch`) in one transaction, as a task of
//! its own: batches of different partitions run concurrently (as many as the pool has
//! connections), one at a time per partition, while the loop keeps polling. Records that
//! arrive while their partition's batch is in flight make its next, larger batch. In one
//! transaction:
//!
//! 1. `SELECT next_offset ... FOR UPDATE` on the partition's position. It must equal the
//!    position this consumer believes it is at; otherwise another writer moved it (a
//!    consumer that kept the partition through a rebalance, a rebuilt read model swapped
//!    in), so the transaction is rolled back and the consumer seeks to the stored
//!    position. This compare-and-set is what makes the effect exactly once whatever the
//!    timing of rebalances.
//! 2. [`Handler::apply`] writes the read model and names the records to dead-letter.
//! 3. Those records are produced to the dead-letter topic with the reason and origin in
//!    headers, and acknowledged, before the commit (a crash in between may dead-letter
//!    a record twice, never lose one).
//! 4. The position advances past the batch; `COMMIT`.
//!
//! A failed batch (database down, deadlock, dead-letter topic unreachable) is rolled
//! back and retried with backoff (100 ms doubling to 10 s, with jitter: `backon`),
//! holding its partition, until it succeeds or shutdown begins: a projection never skips
//! a record it could not apply.
//!
//! # Where the consumer starts
//!
//! - [`Projection::subscribe`] joins a consumer group. Whenever partitions are assigned
//!   (at start and at every rebalance), their stored positions are read and the consumer
//!   seeks to them (to the beginning when none is stored). librdkafka can only seek a
//!   partition once its fetcher has started, so a seek is retried every poll until it
//!   succeeds; records of a partition are dropped until then. A seek waits for the
//!   fetcher (up to 500 ms), so it runs on a blocking thread (`spawn_blocking`), never on
//!   the runtime's worker that runs the loop. Kafka's committed offsets
//!   are still written (asynchronously, after the database commit) so that the fetcher
//!   usually starts where the seek lands, but they are a hint, never trusted.
//! - [`Projection::assign_all`] takes every partition without a group, starting at the
//!   stored positions (the first offset where none is stored): for rebuilding a read
//!   model and for benchmarks.
//!   [`Projection::run_to_end`] then runs until every partition reached its end, and
//!   [`Projection::run_to`] until given positions are reached, never past them.
//!
//! The consumer runs with [`consumer_config`] applied to the given configuration
//! (auto-commit off, statistics for the lag gauges, a short `fetch.queue.backoff.ms`).
//!
//! # Metrics
//!
//! Labelled with `projection` (and `partition` where it applies):
//! - `consumer_rebalances_total` (counter, by `kind`: `assigned`, `revoked`): rebalances
//!   of this member of the group (the name the platform's other consumers use too);
//! - `projection_consumer_lag` (gauge, per partition): records between the stored
//!   position and the end of the partition (the end from librdkafka's statistics,
//!   every 2 s, or the last record polled when that is further);
//! - `projection_events_applied_total` (counter) and `projection_events_applied_per_second`
//!   (gauge, over the last 10 s): records committed;
//! - `projection_apply_latency_seconds` (histogram): from the record's timestamp (the
//!   producer's create time) to the commit of its batch;
//! - `projection_batch_size` and `projection_batch_duration_seconds` (histograms, per
//!   partition batch);
//! - `projection_dead_letters_total`, `projection_position_conflicts_total`,
//!   `projection_apply_failures_total` (counters).

mod apply;
mod consumer;
mod context;
mod dead_letter;
mod metadata;
mod meters;
mod positions;
mod settings;
mod state;

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBackoff, ExponentialBuilder};
pub use consumer::{Committed, Projection};
use deadpool_postgres::Transaction;
pub use metadata::{topic_partitions, watermarks};
pub use settings::{Settings, consumer_config};

/// DDL of the positions table (see the [crate docs](crate)).
pub const POSITIONS_TABLE_SQL: &str = include_str!("sql/positions_table.sql");

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kafka client could not be created or used.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// No database connection could be had.
    #[error("database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement failed.
    #[error("database error: {}", describe(.0))]
    Database(#[from] tokio_postgres::Error),
    /// The handler failed to apply a batch.
    #[error("applying a batch failed: {0}")]
    Handler(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The topic does not exist or has no partitions.
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
    /// A method that needs a projection made by [`Projection::assign_all`] (named here)
    /// was called on a subscribed one.
    #[error("{0} needs a projection made by assign_all")]
    NeedsAssignAll(&'static str),
    /// A task of the crate's own (reading metadata) panicked: a bug.
    #[error("a background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

pub(crate) use orders_postgres::describe;

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One record of the topic, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its value.
    pub payload: Option<Vec<u8>>,
    /// Its timestamp in milliseconds since the epoch (create or log-append time).
    pub timestamp_ms: Option<i64>,
    /// Its headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    /// The value of the first header named `name`, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// The records of one partition to apply in one transaction, in offset order.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The records, oldest first.
    pub records: &'a [Record],
}

/// A record the handler could not use: it goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Index of the record in [`Batch::records`].
    pub index: usize,
    /// Why, for people: the `dlq.reason` header.
    pub reason: String,
}

/// What a handler did with a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Records to dead-letter (every other record counts as handled, whether it changed
    /// the read model or was recognised as a duplicate).
    pub dead_letters: Vec<DeadLetter>,
}

/// Applies batches of records to the read model.
pub trait Handler: Send + Sync + 'static {
    /// Why a batch could not be applied. Every error is treated as possibly transient:
    /// the transaction is rolled back and the batch retried with backoff. A record that
    /// will never apply must be named in [`Outcome::dead_letters`] instead.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Applies `batch` through `tx`, the transaction that will also store the position.
    /// It must not commit or roll back.
    fn apply(
        &self,
        tx: &Transaction<'_>,
        batch: &Batch<'_>,
    ) -> impl Future<Output = Result<Outcome, Self::Error>> + Send;
}

/// The one backoff of the crate's retries (a failed batch, reading positions): 100 ms
/// doubling up to 10 s, with jitter, for as long as it takes.
pub(crate) fn backoff() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}
