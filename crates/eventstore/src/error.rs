//! The crate's one error type, and the classification of PostgreSQL failures that
//! decides what to do next: report a lost race, retry later, or stop.

use std::{sync::Arc, time::Duration};

use deadpool_postgres::PoolError;
use uuid::Uuid;

use orders_postgres::{Failure, classify, describe};

/// What can go wrong; see [`Error::is_transient`] for what to retry.
///
/// Cheap to clone (the underlying driver errors are shared), so that the failure of
/// one shared transaction can be given to each append it carried.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// The append is malformed (no events, or versions not contiguous after the
    /// expected one): a bug in the caller. Nothing was written.
    #[error("invalid append: {0}")]
    InvalidAppend(String),
    /// The store is shutting down (its committer tasks have stopped); nothing was
    /// written. Another replica may take the request.
    #[error("the event store is shut down")]
    ShutDown,
    /// Too many appends are already waiting for a committer; nothing was written.
    /// Shed load: retry later.
    #[error("the event store is overloaded: {queued} appends are already waiting")]
    Overloaded {
        /// How many appends were waiting.
        queued: usize,
    },
    /// The append could not be written within its deadline ([`Options::append_timeout`](crate::Options::append_timeout))
    /// and was abandoned before its commit was sent: nothing was written. Retry later.
    #[error("the append was not written within {0:?}; nothing was written")]
    Timeout(Duration),
    /// The commit was sent but its answer was lost (the connection broke, or the
    /// deadline passed while waiting for it), and the store could not learn in time
    /// whether it took effect. Retry the same append, with the same event ids: the
    /// store recognises its own rows and answers `Ok` when the first try committed.
    #[error("the outcome of the commit is unknown: {0}")]
    OutcomeUnknown(#[source] Box<Error>),
    /// No connection could be had: the database is down or overloaded. Retry later.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Arc<PoolError>),
    /// A statement failed.
    #[error("database error: {}", describe(.0))]
    Database(#[source] Arc<tokio_postgres::Error>),
    /// Applying the schema migrations failed (or this role may not apply them).
    #[error("{0}")]
    Migration(#[source] Arc<orders_postgres::MigrateError>),
}

impl From<PoolError> for Error {
    fn from(error: PoolError) -> Self {
        Error::Unavailable(Arc::new(error))
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(error: tokio_postgres::Error) -> Self {
        Error::Database(Arc::new(error))
    }
}

impl From<orders_postgres::MigrateError> for Error {
    fn from(error: orders_postgres::MigrateError) -> Self {
        Error::Migration(Arc::new(error))
    }
}

impl Error {
    /// Whether retrying the same operation later may succeed (the database was
    /// unreachable or busy, the connection broke, the store was overloaded or is
    /// shutting down), as opposed to a conflict, a refusal or a bug.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unavailable(_)
            | Error::ShutDown
            | Error::Overloaded { .. }
            | Error::Timeout(_)
            | Error::OutcomeUnknown(_) => true,
            Error::Database(e) => classify(e) == Failure::Transient,
            Error::Conflict { .. }
            | Error::DuplicateIdempotencyKey(_)
            | Error::InvalidAppend(_)
            | Error::Migration(_) => false,
        }
    }
}
