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

use anyhow::Context as _;
use deadpool_postgres::Pool;
use orders_runtime::postgres::{DatabaseUrl, Session};
use tokio_postgres::Client;

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
    /// The server-side limits of each session.
    pub session: &'a Session,
    /// Commit without waiting for the WAL flush (`synchronous_commit = off`). Safe for
    /// projection writes: a database crash loses the last few batches *together with*
    /// their positions, and they are applied again from Kafka.
    pub asynchronous_commit: bool,
}

/// A pool of at most `size` connections whose `search_path` is `options.schema`, with
/// the session limits of `options.session` (see [`orders_postgres::pool`]; no
/// connection is opened before one is needed).
pub fn pool(url: &DatabaseUrl, size: usize, options: PoolOptions<'_>) -> anyhow::Result<Pool> {
    let mut session = options.session.clone().with("search_path", options.schema);
    if options.asynchronous_commit {
        session = session.with("synchronous_commit", "off");
    }
    orders_postgres::pool(url, size, options.application_name, &session).context("building a PostgreSQL pool")
}

/// A dedicated connection with the default `search_path` (migrations, rebuild swaps).
/// Its statements have no time limit (a migration or a swap may take long, and runs
/// under an advisory lock), but an idle transaction still ends after a minute.
pub async fn connect(url: &DatabaseUrl, application_name: &str) -> anyhow::Result<Client> {
    let session = Session { statement_timeout: None, lock_timeout: None, ..Session::default() };
    Ok(orders_postgres::connect(url, application_name, &session).await?)
}

/// Applies the migrations (creating the live read model on first start).
pub async fn migrate(url: &DatabaseUrl) -> anyhow::Result<()> {
    let mut client = connect(url, "projector-migrate").await?;
    orders_postgres::migrate_on(
        &mut client,
        MIGRATION_LOCK,
        &embedded::migrations::runner(),
        "projector",
        None,
    )
    .await
    .context("applying migrations")
}
