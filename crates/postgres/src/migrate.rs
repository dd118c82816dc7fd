//! [`migrate`]: refinery migrations on a connection of their own, free of the pool's
//! session limits, serialised between processes by an advisory lock.

use deadpool_postgres::Pool;

/// Why [`migrate`] failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// No connection.
    #[error("postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migration(#[from] refinery::Error),
}

/// Runs `runner` on a connection taken out of `pool` for good (its settings change):
/// no statement or lock timeout, under the advisory lock `lock` (a fixed key per set
/// of migrations), so that replicas starting together apply each migration once.
/// Logs each applied migration, naming `what`.
pub async fn migrate(
    pool: &Pool,
    lock: i64,
    runner: &refinery::Runner,
    what: &str,
) -> Result<(), MigrateError> {
    let mut client = deadpool_postgres::Object::take(pool.get().await?);
    client.batch_execute("SET statement_timeout = 0; SET lock_timeout = 0").await?;
    client.execute("SELECT pg_advisory_lock($1)", &[&lock]).await?;
    let report = runner.run_async(&mut *client).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&lock]).await?;
    for migration in report?.applied_migrations() {
        tracing::info!(migration = %migration, what, "applied migration");
    }
    Ok(())
}
