//! [`migrate`]: refinery migrations on a connection of their own, free of the pool's
//! session limits, serialised between processes by an advisory lock.
//!
//! Least privilege: a service may run as a role that can read and write its tables but
//! not change the schema (no DDL), while the migrations are applied by the schema's
//! owner (a Kubernetes Job running the service's `migrate` command). [`migrate`] first
//! reads the history table: when every migration is applied already, it is done,
//! having needed nothing but `SELECT` on that table. Otherwise it applies them, and a
//! role that may not says so ([`MigrateError::NotPermitted`]): the caller retries until
//! the owner has migrated.

use deadpool_postgres::Pool;
use tokio_postgres::error::SqlState;

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
    /// Migrations are missing and this role may not apply them.
    #[error(
        "the {what} migrations are not all applied, and this database role may not apply them: \
         run the service's `migrate` command as the schema's owner ({reason})"
    )]
    NotPermitted {
        /// Which migrations.
        what: String,
        /// The server's refusal.
        reason: String,
    },
}

/// Runs `runner` on a connection taken out of `pool` for good (its settings change):
/// no statement or lock timeout, under the advisory lock `lock` (a fixed key per set
/// of migrations), so that replicas starting together apply each migration once.
/// Returns at once when every migration is applied already (see the module docs).
/// Logs each applied migration, naming `what`.
pub async fn migrate(
    pool: &Pool,
    lock: i64,
    runner: &refinery::Runner,
    what: &str,
) -> Result<(), MigrateError> {
    let mut client = deadpool_postgres::Object::take(pool.get().await?);
    migrate_on(&mut client, lock, runner, what, None).await
}

/// [`migrate`] on a connection the caller opened (it is left without a statement
/// timeout). Each lock a migration statement takes is waited for at most
/// `lock_timeout` (none: as long as it takes), so that a migration that needs a table
/// busy with live traffic fails (and is retried) instead of queueing that traffic behind
/// it; the advisory lock between replicas is waited for as long as it takes.
pub async fn migrate_on(
    client: &mut tokio_postgres::Client,
    lock: i64,
    runner: &refinery::Runner,
    what: &str,
    lock_timeout: Option<std::time::Duration>,
) -> Result<(), MigrateError> {
    if all_applied(client, runner).await {
        return Ok(());
    }
    client.batch_execute("SET statement_timeout = 0; SET lock_timeout = 0").await?;
    client.execute("SELECT pg_advisory_lock($1)", &[&lock]).await?;
    if let Some(timeout) = lock_timeout {
        client.batch_execute(&format!("SET lock_timeout = '{}ms'", timeout.as_millis())).await?;
    }
    let report = runner.run_async(client).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&lock]).await?;
    let report = report.map_err(|e| match refused(&e) {
        Some(reason) => MigrateError::NotPermitted { what: what.to_string(), reason },
        None => MigrateError::Migration(e),
    })?;
    for migration in report.applied_migrations() {
        tracing::info!(migration = %migration, what, "applied migration");
    }
    Ok(())
}

/// Whether the history table lists each of `runner`'s migrations, unchanged. Any
/// failure to read it (no table yet) means no: the migrations run as usual.
async fn all_applied(client: &mut tokio_postgres::Client, runner: &refinery::Runner) -> bool {
    let Ok(applied) = runner.get_applied_migrations_async(client).await else {
        return false;
    };
    runner.get_migrations().iter().all(|wanted| {
        applied.iter().any(|done| done.version() == wanted.version() && done.checksum() == wanted.checksum())
    })
}

/// The server's message when `error` is a refusal for lack of privilege.
fn refused(error: &refinery::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(db) = cause.downcast_ref::<tokio_postgres::Error>().and_then(|e| e.as_db_error())
            && db.code() == &SqlState::INSUFFICIENT_PRIVILEGE
        {
            return Some(db.message().to_string());
        }
        source = cause.source();
    }
    None
}
