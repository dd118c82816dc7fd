//! Where the read model lives, and connections to it.
//!
//! The tables live in a schema of their own, [`LIVE`] (`read_model`), created by the
//! refinery migrations in `migrations/` through the SQL function
//! `projector_create_read_model(schema)`. The projector's SQL names tables without a
//! schema: its connections set `search_path` to the read model's schema, so the same
//! statements serve the live schema and a rebuild's [`NEXT`], and follow a swap (a
//! schema rename invalidates prepared statements, which PostgreSQL then re-plans against
//! the renamed schemas).
//!
//! Migrations run on a connection of their own with the default `search_path`, under an
//! advisory lock so that replicas starting together do not race; refinery's history
//! table stays in `public`.

use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use orders_runtime::postgres::DatabaseUrl;
use tokio_postgres::{Client, NoTls};

/// The schema the live read model is in.
pub const LIVE: &str = "read_model";
/// The schema a rebuild fills.
pub const NEXT: &str = "read_model_next";
/// The name the live schema gets when a rebuild replaces it, until it is dropped.
pub const RETIRED: &str = "read_model_retired";
/// The advisory lock key held while migrating ("projector migrations").
const MIGRATION_LOCK: i64 = 7_401_223_101;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// How connections of a pool are set up.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions<'a> {
    /// `application_name` in `pg_stat_activity`.
    pub application_name: &'a str,
    /// The read model schema the connections use.
    pub schema: &'a str,
    /// Commit without waiting for the WAL flush (`synchronous_commit = off`). Safe for
    /// projection writes: a database crash loses the last few batches *together with*
    /// their positions, and they are applied again from Kafka.
    pub asynchronous_commit: bool,
}

/// A pool of at most `size` connections whose `search_path` is `options.schema`, with
/// the same timeouts as `orders_runtime::postgres::pool` (no connection is opened before
/// one is needed).
pub fn pool(url: &DatabaseUrl, size: usize, options: PoolOptions<'_>) -> anyhow::Result<Pool> {
    let mut config = url.config().clone();
    config.application_name(options.application_name);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    let mut startup = format!("-c search_path={}", options.schema);
    if options.asynchronous_commit {
        startup.push_str(" -c synchronous_commit=off");
    }
    if let Some(existing) = config.get_options() {
        startup = format!("{existing} {startup}");
    }
    config.options(startup);
    let manager =
        Manager::from_config(config, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(Duration::from_secs(5)))
        .wait_timeout(Some(Duration::from_secs(10)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .context("building a PostgreSQL pool")
}

/// A dedicated connection with the default `search_path` (migrations, rebuild swaps).
pub async fn connect(url: &DatabaseUrl, application_name: &str) -> anyhow::Result<Client> {
    let mut config = url.config().clone();
    config.application_name(application_name);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    let (client, connection) =
        config.connect(NoTls).await.with_context(|| format!("connecting to PostgreSQL at {url}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "dedicated PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// Applies the migrations (creating the live read model on first start).
pub async fn migrate(url: &DatabaseUrl) -> anyhow::Result<()> {
    let mut client = connect(url, "projector-migrate").await?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .context("taking the migration lock")?;
    let report = embedded::migrations::runner().run_async(&mut client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .context("releasing the lock")?;
    for migration in report.context("applying migrations")?.applied_migrations() {
        tracing::info!(migration = %migration, "applied migration");
    }
    Ok(())
}
