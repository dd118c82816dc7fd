//! A reliable Kafka consumer: records of different keys are handled concurrently,
//! records of one key strictly in order; offsets are committed only up to the
//! contiguous prefix of done records; transient failures are retried with backoff
//! without holding back other keys; a record that fails for good goes to a dead-letter
//! topic and holds back the later records of its key until it is replayed or
//! discarded; an inbox table makes each effect happen once.
//!
//! It does for Rust what Confluent's Parallel Consumer does for Java (key-ordered
//! concurrency within a partition), plus sequenced dead letters (as Axon does), on
//! rdkafka and PostgreSQL. It knows nothing of what the records mean.
//!
//! # Quick start
//!
//! ```no_run
//! use orders_consumer::{Consumer, Failure, Handler, Record, Settings, Store};
//! use rdkafka::ClientConfig;
//! use tokio_util::sync::CancellationToken;
//!
//! struct Print;
//!
//! impl Handler for Print {
//!     async fn handle(&self, record: &Record) -> Result<(), Failure> {
//!         println!("{} {}", record.origin(), record.key_text());
//!         Ok(())
//!     }
//! }
//!
//! # async fn run(pool: deadpool_postgres::Pool) -> orders_consumer::Result<()> {
//! let mut config = ClientConfig::new();
//! config.set("bootstrap.servers", "127.0.0.1:9092");
//! let settings = Settings::new("printer", &["orders"], config, "dlq.orders");
//! let store = Store::new(pool, "printer");
//! store.migrate().await?;
//! let token = CancellationToken::new();
//! Consumer::new(settings, store, Print)?.run(token).await
//! # }
//! ```
//!
//! `examples/consume.rs` runs one against the local infrastructure (`make up`).
//!
//! # Guarantees and how they are kept
//!
//! - **At least once, never past unfinished work.** A partition's committed offset is
//!   the lowest offset not done yet (handled, dead-lettered or parked): records done
//!   beyond it are handled again after a crash or a rebalance, never lost. Commits go
//!   out every [`Settings::commit_interval`], at shutdown and inside the revoke
//!   callback.
//! - **Key order.** Records are queued per (partition, key) and a key has at most one
//!   record in flight; up to [`Settings::concurrency`] records of different keys run at
//!   once, also within one partition. Records without a key share one queue per
//!   partition.
//! - **Bounded memory, polling never stops.** A thread of its own polls librdkafka all
//!   the time (a slow handler never breaches `max.poll.interval.ms`); every partition is
//!   paused while [`Settings::max_buffered_records`] records or
//!   [`Settings::max_buffered_bytes`] bytes are received and not done, and resumed
//!   below half.
//! - **Retries.** A [`Failure::Transient`] is retried after an exponential backoff with
//!   jitter ([`Retry`]); only that key waits. After [`Retry::max_attempts`] attempts, or
//!   at once for a [`Failure::Permanent`] (an undecodable record, a handler panic), the
//!   record is dead-lettered. A [`Failure::Unavailable`] (the database or a service the
//!   handler needs is down) is retried, backing off up to [`Retry::max_delay`], until it
//!   succeeds: an outage is not the record's fault.
//! - **Dead letters** go to [`Settings::dead_letter_topic`] with the original key,
//!   value and headers plus the headers of [`dead_letter::header`] (reason, attempts,
//!   origin topic, partition and offset, the consumer's name), and into the store. The
//!   offset is done only once both are acknowledged.
//! - **Sequenced dead letters.** The dead letter's key is held: its later records are
//!   parked in the store (surviving restarts) instead of handled, until
//!   [`Store::replay`] or [`Store::discard`] settles the key's dead letters and
//!   handles its parked records in order. See [`Store`].
//! - **Rebalances.** Cooperative-sticky assignment. On revocation the callback stops
//!   starting records of the revoked partitions, waits up to
//!   [`Settings::revoke_timeout`] for those in flight and commits the done prefix
//!   before returning. Every assignment gives the partition a new epoch; whatever ends
//!   under an older one is ignored.
//! - **Effects once.** Kafka redelivers; [`inbox::claim`] in the handler's transaction
//!   makes the second delivery a no-op.
//! - **Shutdown.** Cancelling the token stops starting records, lets those in flight
//!   finish for up to [`Settings::drain_timeout`], commits, and leaves the group.
//!
//! # Metrics
//!
//! See [`metric`]: records in flight and buffered, held keys, retries, dead letters,
//! records parked and unrouted, handler latency, lag per partition, pause state.

mod consumer;
mod context;
pub mod dead_letter;
mod error;
mod handler;
pub mod inbox;
pub mod metric;
mod offsets;
mod record;
mod schedule;
mod settings;
mod shared;
mod store;

pub use consumer::{Consumer, consumer_config};
pub use error::{Error, Result};
pub use handler::{BoxError, Decoded, Failure, Handler, Router};
pub use record::Record;
pub use settings::{Retry, Settings};
pub use store::{DeadLetter, Outcome, Selection, Store};
