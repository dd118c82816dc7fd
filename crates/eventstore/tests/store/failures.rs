//! Failure paths: a lost commit answer, a full queue, an append stuck past its
//! deadline. A test holds the store's only committer on a row lock of its own (an
//! uncommitted insert of the version the store's first append wants), so that what
//! queues behind it is known, then releases it.

use std::{sync::Arc, time::Duration};

use orders_eventstore::{Append, Error, EventStore, GroupCommit, IdempotencyRecord, Options};
use orders_testkit::{
    pg_proxy::PgProxy,
    postgres::{TestDatabase, connect},
};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{append, count, event, outbox_for};

pub const PATIENCE: Duration = Duration::from_secs(60);

/// Waits until `condition` holds, or fails the test after [`PATIENCE`].
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    while !condition().await {
        assert!(started.elapsed() < PATIENCE, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sessions of the test database waiting on a lock.
pub async fn lock_waiters(db: &TestDatabase) -> i64 {
    let client = db.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            &[&db.name()],
        )
        .await
        .unwrap()
        .get(0)
}

/// A store with one committer, over `url`.
pub async fn store(url: &str, max_queued: usize, append_timeout: Duration) -> Arc<EventStore> {
    let pool = orders_testkit::postgres::pool(url, 8);
    let store = EventStore::new(
        pool,
        Options {
            notify_channel: Some("outbox".into()),
            group_commit: Some(GroupCommit { committers: 1, max_batch: 64, max_queued }),
            append_timeout,
        },
    );
    store.migrate().await.unwrap();
    Arc::new(store)
}

/// An uncommitted version 1 of `stream`, held by a connection of the test's own: the
/// store's append of that version waits on it.
pub async fn hold_version_one(db: &TestDatabase, stream: Uuid) -> tokio_postgres::Client {
    let blocker = connect(db.url()).await;
    blocker
        .batch_execute(&format!(
            "BEGIN; INSERT INTO events (stream_id, version, event_id, event_type, payload) \
             VALUES ('{stream}', 1, gen_random_uuid(), 'Blocker', '\\x00')"
        ))
        .await
        .unwrap();
    blocker
}

/// Appends version 1 of a new stream (with an outbox row and an idempotency record).
pub fn spawn_append(store: &Arc<EventStore>, stream: Uuid) -> JoinHandle<Result<(), Error>> {
    let store = Arc::clone(store);
    tokio::spawn(async move {
        let events = [event(1)];
        let outbox = outbox_for(stream, &events);
        let record = IdempotencyRecord {
            // Its own key: appends to one stream from two stores must not meet on it.
            key: format!("k-{stream}-{}", Uuid::now_v7()),
            request_hash: vec![],
            status: 201,
            response: serde_json::json!({ "stream": stream }),
            ttl: Duration::from_secs(60),
        };
        store.append(Append { idempotency: Some(&record), ..append(stream, 0, &events, &outbox) }).await
    })
}

/// Holds the store's only committer on `blocked`'s version 1 and queues `streams`
/// behind it; returns the blocker, the held append and the queued ones.
pub async fn queue_behind_a_held_committer(
    db: &TestDatabase,
    store: &Arc<EventStore>,
    blocked: Uuid,
    streams: &[Uuid],
) -> (tokio_postgres::Client, JoinHandle<Result<(), Error>>, Vec<JoinHandle<Result<(), Error>>>) {
    // Other sessions (another store's committer) may be waiting already.
    let waiting = lock_waiters(db).await;
    let blocker = hold_version_one(db, blocked).await;
    let held = spawn_append(store, blocked);
    wait_until("the committer waits on the test's lock", || async { lock_waiters(db).await > waiting }).await;
    let queued: Vec<_> = streams.iter().map(|s| spawn_append(store, *s)).collect();
    let expected = streams.len();
    // Once the held append is answered the committer drains the queue: the count is
    // never seen then, so stop waiting and say why (the append's deadline was too short
    // for this machine) instead of spinning to the limit.
    wait_until("every append is queued", || async {
        store.queued_appends() == expected || held.is_finished()
    })
    .await;
    assert!(
        !held.is_finished(),
        "the held append was answered before the queue was seen full: {:?}",
        held.await
    );
    (blocker, held, queued)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_commit_answer_is_lost_is_answered_as_committed() {
    let db = TestDatabase::create().await;
    let proxy = PgProxy::start(db.url()).await;
    let store = store(proxy.url(), 64, PATIENCE).await;
    let streams: Vec<Uuid> = (0..8).map(|_| Uuid::now_v7()).collect();
    let (blocker, held, queued) = queue_behind_a_held_committer(&db, &store, Uuid::now_v7(), &streams).await;

    // The next commit is the queued batch's: the server commits it, the store only
    // sees its connection break.
    proxy.lose_next_commit_answer();
    blocker.batch_execute("COMMIT").await.unwrap();
    let held = held.await.unwrap();
    assert!(matches!(held, Err(Error::Conflict { .. })), "the held append lost to the test's row: {held:?}");
    for (stream, task) in streams.iter().zip(queued) {
        let outcome = task.await.unwrap();
        assert!(outcome.is_ok(), "stream {stream}: a committed append must not answer {outcome:?}");
    }
    assert_eq!(proxy.commit_answers_lost(), 1, "the batch's commit answer was lost");
    for stream in &streams {
        assert_eq!(count(&store, "SELECT count(*) FROM events WHERE stream_id = $1", *stream).await, 1);
    }
    let client = db.pool().get().await.unwrap();
    let rows: i64 = client.query_one("SELECT count(*) FROM outbox", &[]).await.unwrap().get(0);
    assert_eq!(rows, 8, "one outbox row per committed event, none twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_sheds_load_at_once() {
    let db = TestDatabase::create().await;
    let store = store(db.url(), 4, PATIENCE).await;
    let streams: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let (blocker, held, queued) = queue_behind_a_held_committer(&db, &store, Uuid::now_v7(), &streams).await;

    let extra = tokio::time::timeout(Duration::from_secs(20), spawn_append(&store, Uuid::now_v7())).await;
    let outcome =
        extra.expect("an append to a full queue must be answered at once, not wait in line").unwrap();
    assert!(matches!(outcome, Err(Error::Overloaded { queued: 4 })), "{outcome:?}");

    // The queued ones are written once the committer is free again.
    blocker.batch_execute("ROLLBACK").await.unwrap();
    held.await.unwrap().unwrap();
    for task in queued {
        task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_stuck_behind_a_lock_give_up_at_their_deadline_and_write_nothing() {
    let db = TestDatabase::create().await;
    // Long enough that the setup (connect, be seen waiting, queue) always fits in it on
    // a loaded machine: the held append must still be held when the queue is checked.
    let deadline = Duration::from_secs(10);
    let store = store(db.url(), 64, deadline).await;
    // The queued append wants the held version too: it cannot slip through either.
    let waiting = Uuid::now_v7();
    let (blocker, held, queued) = queue_behind_a_held_committer(&db, &store, waiting, &[waiting]).await;

    let within = Duration::from_secs(60);
    let held =
        tokio::time::timeout(within, held).await.expect("the held append outlived its deadline").unwrap();
    assert!(matches!(held, Err(Error::Timeout(_))), "{held:?}");
    let mut queued = queued;
    let waited =
        tokio::time::timeout(within, queued.remove(0)).await.expect("a queued append outlived its deadline");
    assert!(matches!(waited.unwrap(), Err(Error::Timeout(_))));

    // Nothing of either was written, even once the lock is gone.
    blocker.batch_execute("ROLLBACK").await.unwrap();
    wait_until("no session waits on a lock", || async { lock_waiters(&db).await == 0 }).await;
    assert_eq!(count(&store, "SELECT count(*) FROM events WHERE stream_id = $1", waiting).await, 0);
    let client = db.pool().get().await.unwrap();
    let rows: i64 = client.query_one("SELECT count(*) FROM events", &[]).await.unwrap().get(0);
    assert_eq!(rows, 0, "an append that timed out wrote nothing");
    // The store is not stuck: the next append goes through.
    spawn_append(&store, waiting).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_fails_a_whole_batch_at_once_with_one_connection_attempt() {
    let db = TestDatabase::create().await;
    let proxy = PgProxy::start(db.url()).await;
    let store = store(proxy.url(), 64, PATIENCE).await;
    let streams: Vec<Uuid> = (0..8).map(|_| Uuid::now_v7()).collect();
    let (blocker, held, queued) = queue_behind_a_held_committer(&db, &store, Uuid::now_v7(), &streams).await;

    proxy.go_down();
    let held = held.await.unwrap();
    assert!(held.as_ref().is_err_and(Error::is_transient), "{held:?}");
    for task in queued {
        let outcome = task.await.unwrap();
        assert!(outcome.as_ref().is_err_and(Error::is_transient), "{outcome:?}");
    }
    // The batch costs one try, not one more per append (each waiting out the pool).
    let attempts = proxy.attempts_while_down();
    assert!(attempts <= 2, "{attempts} connection attempts for one batch of 8 during an outage");
    blocker.batch_execute("ROLLBACK").await.unwrap();

    // Back up, the store works again.
    proxy.come_back();
    spawn_append(&store, Uuid::now_v7()).await.unwrap().unwrap();
}

/// Under load an append may wait in the queue most of its time; batched with fresh
/// ones, its deadline must not become theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_append_timing_out_in_a_batch_does_not_time_out_the_fresh_ones_with_it() {
    let db = TestDatabase::create().await;
    let timeout = Duration::from_secs(10);
    let store = store(db.url(), 64, timeout).await;
    let blocked = Uuid::now_v7();
    let blocker = hold_version_one(&db, blocked).await;
    // The committer is held until the first append's deadline (t0 + 10 s).
    let held = spawn_append(&store, blocked);
    wait_until("the committer waits on the test's lock", || async { lock_waiters(&db).await >= 1 }).await;
    // These pauses only age the appends (their deadlines come 2 s and 5 s after the
    // held one's); nothing waits on them to happen.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Wants the held version too: it cannot be written, and times out in the batch.
    let old = spawn_append(&store, blocked);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let fresh_stream = Uuid::now_v7();
    let fresh = spawn_append(&store, fresh_stream);
    wait_until("both are queued", || async { store.queued_appends() == 2 || held.is_finished() }).await;

    let within = PATIENCE;
    let held = tokio::time::timeout(within, held).await.expect("the held append was never answered").unwrap();
    assert!(matches!(held, Err(Error::Timeout(_))), "{held:?}");
    let old = tokio::time::timeout(within, old).await.expect("the old append was never answered").unwrap();
    assert!(matches!(old, Err(Error::Timeout(_))), "{old:?}");
    let fresh =
        tokio::time::timeout(within, fresh).await.expect("the fresh append was never answered").unwrap();
    assert!(fresh.is_ok(), "a fresh append with seconds left answered {fresh:?} with the old one");
    blocker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(count(&store, "SELECT count(*) FROM events WHERE stream_id = $1", fresh_stream).await, 1);
}
