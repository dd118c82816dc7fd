//! The crate's error type.

use rdkafka::error::KafkaError;

/// What can go wrong outside a handler.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The settings cannot work; fix them.
    #[error("invalid consumer settings: {0}")]
    Settings(String),
    /// Kafka refused or failed an operation.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A database statement failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No database connection could be had.
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The schema migrations failed.
    #[error("migrations: {0}")]
    Migration(#[from] orders_postgres::MigrateError),
    /// A selection named no record, or a record that is not this consumer's.
    #[error("not found: {0}")]
    NotFound(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
