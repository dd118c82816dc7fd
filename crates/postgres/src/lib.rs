//! PostgreSQL plumbing shared by the platform's services and libraries, and usable by
//! any Rust service on `tokio-postgres` and `deadpool-postgres`.
//!
//! - [`DatabaseUrl`]: a connection URL parsed at start (a bad value stops the process
//!   with a clear message) whose password never shows in logs or `Debug` output, with
//!   libpq's TLS parameters ([`Tls`]: `sslmode` up to `verify-full`, through OpenSSL).
//! - [`Session`]: the server-side limits every connection sets at start:
//!   `statement_timeout`, `lock_timeout` and `idle_in_transaction_session_timeout`.
//!   They matter because a client-side timeout (`tokio::time::timeout` around a query)
//!   only stops *waiting*: the statement goes on running on the server, holding its
//!   locks, on a connection that then goes back to the pool. With the session limits,
//!   the server itself ends a statement that runs too long, a lock wait that would
//!   queue for ever, and a transaction whose client went away mid-way.
//! - [`pool`] builds a pool with those settings and with timeouts for creating,
//!   waiting for and recycling connections, so that a database that is down makes
//!   callers fail fast instead of hang; [`connect`] opens one dedicated connection the
//!   same way.
//! - [`group_commit::next_batch`]: the queue in front of committers that share
//!   transactions among the requests waiting for them.
//! - [`describe`] and [`classify`]: what a `tokio_postgres::Error` says (its own
//!   `Display` says only "db error") and what to do about it: retry ([`Failure::Transient`]),
//!   treat as a lost race ([`Failure::UniqueViolation`]) or give up ([`Failure::Permanent`]);
//!   [`aborted_by_concurrency`] tells, among the transient ones, a deadlock or a
//!   serialization failure (the transaction lost to another one, not to an outage).
//!
//! # Quick start
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use orders_postgres::{DatabaseUrl, Session, pool};
//!
//! let url: DatabaseUrl = "postgres://app@127.0.0.1:15432/orders".parse()?;
//! let pool = pool(&url, 8, "my-service", &Session::default())?;
//! let client = pool.get().await?;
//! let row = client.query_one("SHOW statement_timeout", &[]).await?;
//! assert_eq!(row.get::<_, String>(0), "30s");
//! # Ok(()) }
//! ```

mod error;
pub mod group_commit;
mod migrate;
mod pool;
mod tls;
mod url;

pub use error::{Failure, aborted_by_concurrency, classify, describe, server_unavailable};
pub use migrate::{MigrateError, migrate, migrate_on};
pub use pool::{Session, connect, pool};
pub use tls::{Connector, SslMode, Tls, TlsError};
pub use url::{DatabaseUrl, Target, read_secret_file};

/// What can go wrong while building a pool or opening a connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The pool's configuration is unusable.
    #[error("building a PostgreSQL pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
    /// The TLS settings name a certificate or key that cannot be read or used.
    #[error("the PostgreSQL TLS settings are unusable: {0}")]
    Tls(#[from] TlsError),
    /// A dedicated connection could not be opened.
    #[error("connecting to PostgreSQL at {url}: {}", describe(.source))]
    Connect {
        /// The URL, its password hidden.
        url: String,
        /// Why it failed.
        source: tokio_postgres::Error,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
