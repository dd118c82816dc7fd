//! Migrations run under no time limits of the pool they come from.

use std::time::Duration;

use orders_eventstore::{EventStore, Options};
use orders_postgres::{DatabaseUrl, Session};
use orders_testkit::postgres::{TestDatabase, connect};

use super::failures::wait_until;

/// The advisory lock `EventStore::migrate` takes (part of its contract with other
/// replicas: whoever holds it is migrating).
const MIGRATION_LOCK: i64 = 7_401_223_001;

/// How long the migration's session has been waiting on a lock (0 when it is not).
async fn lock_wait(db: &TestDatabase) -> Duration {
    let client = db.pool().get().await.unwrap();
    let waited: f64 = client
        .query_one(
            "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - query_start)), 0)::float8 \
             FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = 'migrate-test' AND wait_event_type = 'Lock'",
            &[&db.name()],
        )
        .await
        .unwrap()
        .get(0);
    Duration::from_secs_f64(waited)
}

/// Runs `migrate` while the test holds a lock that it needs (taken by `hold`, released
/// by `release`, on a connection of the test's own), until it has waited well past
/// the pool's limits; then lets it finish.
async fn migrate_behind_a_lock(
    db: &TestDatabase,
    store: &EventStore,
    hold: &str,
    release: &str,
    limit: Duration,
) {
    let holder = connect(db.url()).await;
    holder.batch_execute(hold).await.unwrap();
    let migrate = tokio::spawn({
        let store = store.clone();
        async move { store.migrate().await }
    });
    let long = limit * 5;
    wait_until("the migration waited longer than its pool's limits, or failed", || async {
        migrate.is_finished() || lock_wait(db).await > long
    })
    .await;
    assert!(
        !migrate.is_finished(),
        "the migration gave up on a lock wait within the pool's {limit:?} limits: {:?}",
        migrate.await
    );
    holder.batch_execute(release).await.unwrap();
    migrate.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_not_cut_short_by_the_pools_statement_and_lock_timeouts() {
    let db = TestDatabase::create().await;
    let url: DatabaseUrl = db.url().parse().unwrap();
    let limit = Duration::from_millis(200);
    let tight = Session { statement_timeout: Some(limit), lock_timeout: Some(limit), ..Session::default() };
    let pool = orders_postgres::pool(&url, 4, "migrate-test", &tight).unwrap();
    let store = EventStore::new(pool, Options::default());

    // Another replica is migrating (it holds the lock) for longer than the limits.
    let hold = format!("SELECT pg_advisory_lock({MIGRATION_LOCK})");
    let release = format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})");
    migrate_behind_a_lock(&db, &store, &hold, &release, limit).await;

    // A migration's own statement that takes longer than the limits (here: waiting for
    // a reader of the history table to finish).
    migrate_behind_a_lock(
        &db,
        &store,
        "BEGIN; LOCK TABLE refinery_schema_history IN ACCESS EXCLUSIVE MODE",
        "COMMIT",
        limit,
    )
    .await;

    // The pool's connections still carry their limits: the migration's settings did
    // not leak into them.
    let client = store.pool().get().await.unwrap();
    let setting: String = client.query_one("SHOW statement_timeout", &[]).await.unwrap().get(0);
    assert_eq!(setting, "200ms");
}
