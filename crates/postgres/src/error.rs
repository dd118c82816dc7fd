//! What a `tokio_postgres::Error` says, and what a caller should do about it.

use tokio_postgres::error::SqlState;

/// The server's message and SQLSTATE when there is one (tokio-postgres' own `Display`
/// says only "db error"); otherwise the error and its source (an I/O error, a closed
/// connection).
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

/// What a failed statement means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A unique constraint refused the row: another writer got there first. Not worth
    /// retrying as is; re-read and decide.
    UniqueViolation,
    /// The connection, the server or a limit failed, not the statement: the same
    /// statement may succeed later. Retry with backoff, or answer "try again" (503).
    Transient,
    /// The statement itself is wrong for the data or the schema: retrying will not help.
    Permanent,
}

/// Whether the server aborted the transaction to resolve a conflict with concurrent
/// transactions: a deadlock (40P01) or a serialization failure (40001). Such a failure
/// is [`Failure::Transient`] (the same transaction tried again will likely succeed),
/// but it says more: the transaction itself is at fault with another one, not the
/// server or the connection. A caller that put unrelated work into one transaction
/// should retry that work in smaller pieces rather than fail all of it.
pub fn aborted_by_concurrency(error: &tokio_postgres::Error) -> bool {
    error.as_db_error().is_some_and(|db| {
        [SqlState::T_R_SERIALIZATION_FAILURE, SqlState::T_R_DEADLOCK_DETECTED].contains(db.code())
    })
}

/// Whether `error` says the server is not there rather than anything about the
/// statement: no answer (I/O error, closed connection), a connection exception (SQLSTATE
/// class 08), the server shutting down, restarting or not yet accepting connections
/// (57P01-57P03), or too many connections (53300). A [`Failure::Transient`] of that kind
/// lasts as long as the outage: a caller retries it without a limit of attempts.
pub fn server_unavailable(error: &tokio_postgres::Error) -> bool {
    let Some(db) = error.as_db_error() else { return true };
    let code = db.code();
    code.code().starts_with("08")
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(code)
}

/// Classifies `error`. Transient: no answer from the server (I/O error, closed
/// connection, timeout), a connection exception (SQLSTATE class 08), a serialization
/// failure or deadlock (40001, 40P01), the server shutting down or not yet accepting
/// connections (57P01-57P03), too many connections (53300), a statement or lock wait
/// ended by [`Session`](crate::Session)'s limits (57014, 55P03) or a session ended
/// for idling (25P03, 57P05).
pub fn classify(error: &tokio_postgres::Error) -> Failure {
    let Some(db) = error.as_db_error() else {
        return Failure::Transient;
    };
    let code = db.code();
    if *code == SqlState::UNIQUE_VIOLATION {
        return Failure::UniqueViolation;
    }
    let transient = [
        SqlState::T_R_SERIALIZATION_FAILURE,
        SqlState::T_R_DEADLOCK_DETECTED,
        SqlState::ADMIN_SHUTDOWN,
        SqlState::CRASH_SHUTDOWN,
        SqlState::CANNOT_CONNECT_NOW,
        SqlState::TOO_MANY_CONNECTIONS,
        SqlState::QUERY_CANCELED,
        SqlState::LOCK_NOT_AVAILABLE,
        SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT,
        SqlState::IDLE_SESSION_TIMEOUT,
    ];
    if code.code().starts_with("08") || transient.contains(code) {
        Failure::Transient
    } else {
        Failure::Permanent
    }
}
