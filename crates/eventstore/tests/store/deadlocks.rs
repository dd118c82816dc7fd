//! Deadlocks between shared transactions. Each test builds the lock cycle step by
//! step (the test holds rows of its own, uncommitted, where a batch must wait), so
//! the deadlock happens every run, not by chance of timing.

use std::sync::Arc;

use orders_eventstore::{Error, EventStore};
use orders_testkit::postgres::{TestDatabase, connect};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::{
    count,
    failures::{PATIENCE, hold_version_one, lock_waiters, queue_behind_a_held_committer, store, wait_until},
};

type Outcome = JoinHandle<Result<(), Error>>;

/// Streams whose ids sort in this order (the store may order rows by stream id).
fn ids() -> [Uuid; 4] {
    [1, 2, 3, 4].map(|n| Uuid::from_u128(0x0196_0000_0000_7000_8000_0000_0000_0000 | n))
}

/// Makes `store`'s only committer take `batch` (version 1 of each stream, in this
/// order) as one transaction and start it while the test holds `stall`'s version 1:
/// the transaction then waits there, holding whatever rows it wrote before. Returns
/// the batch's appends and the test's hold on `stall`.
async fn start_batch(
    db: &TestDatabase,
    store: &Arc<EventStore>,
    batch: &[Uuid],
    stall: Uuid,
) -> (Vec<Outcome>, tokio_postgres::Client) {
    let waiting = lock_waiters(db).await;
    let (blocker, held, queued) = queue_behind_a_held_committer(db, store, Uuid::now_v7(), batch).await;
    let stall = hold_version_one(db, stall).await;
    // Freed, the committer writes the held append alone, then the queued ones together.
    blocker.batch_execute("ROLLBACK").await.unwrap();
    tokio::time::timeout(PATIENCE, held).await.expect("the held append was never answered").unwrap().unwrap();
    wait_until("the batch waits", || async { lock_waiters(db).await > waiting }).await;
    (queued, stall)
}

async fn outcomes(tasks: Vec<Outcome>) -> Vec<Result<(), Error>> {
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes
            .push(tokio::time::timeout(PATIENCE, task).await.expect("an append was never answered").unwrap());
    }
    outcomes
}

/// Two stores (two replicas) with a batch each over the same two orders, X and Y, in
/// opposite order: today's multi-row insert wrote X then Y against Y then X.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_batches_over_the_same_streams_in_opposite_order_do_not_deadlock_into_transient_errors() {
    let db = TestDatabase::create().await;
    let [x, a, b, y] = ids();
    let first = store(db.url(), 64, PATIENCE).await;
    let second = store(db.url(), 64, PATIENCE).await;
    // The first batch writes X, then waits on A; the second writes Y (in the order it
    // was given), then waits on B; once A and B are let go, each wants the other's row.
    let (first_batch, hold_a) = start_batch(&db, &first, &[x, a, y], a).await;
    let (second_batch, hold_b) = start_batch(&db, &second, &[y, b, x], b).await;
    hold_a.batch_execute("ROLLBACK").await.unwrap();
    hold_b.batch_execute("ROLLBACK").await.unwrap();

    let answers = [(first_batch, [x, a, y]), (second_batch, [y, b, x])];
    let mut won = Vec::new();
    for (tasks, streams) in answers {
        for (stream, outcome) in streams.into_iter().zip(outcomes(tasks).await) {
            match outcome {
                Ok(()) => won.push(stream),
                Err(Error::Conflict { .. }) if stream == x || stream == y => {}
                Err(e) => panic!("stream {stream}: an append answered {e} (transient: {})", e.is_transient()),
            }
        }
    }
    won.sort_unstable();
    assert_eq!(won, [x, a, b, y], "each stream's version 1 was won exactly once");
    for stream in [x, a, b, y] {
        assert_eq!(count(&first, "SELECT count(*) FROM events WHERE stream_id = $1", stream).await, 1);
    }
}

/// A deadlock the store cannot prevent by ordering its own rows (a writer of another
/// kind, or a replica of an older version, takes the rows in another order): the
/// group the server aborts is retried one append at a time, not failed whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_aborted_by_a_deadlock_is_retried_singly_instead_of_failing_whole() {
    let db = TestDatabase::create().await;
    let [x, a, _, y] = ids();
    let store = store(db.url(), 64, PATIENCE).await;
    // The batch writes X, then waits on A.
    let (batch, hold_a) = start_batch(&db, &store, &[x, a, y], a).await;
    // The other writer holds Y and waits on the batch's X. Its own deadlock check is
    // late, so that the server's choice of victim is the batch, whose check comes first.
    let other = connect(db.url()).await;
    other.batch_execute("SET deadlock_timeout = '300s'; BEGIN").await.unwrap();
    let insert_x = format!(
        "INSERT INTO events (stream_id, version, event_id, event_type, payload) \
         VALUES ('{x}', 1, gen_random_uuid(), 'Other', '\\x00')"
    );
    other
        .batch_execute(&format!(
            "INSERT INTO events (stream_id, version, event_id, event_type, payload) \
             VALUES ('{y}', 1, gen_random_uuid(), 'Other', '\\x00')"
        ))
        .await
        .unwrap();
    let other = Arc::new(other);
    let waits_on_x = tokio::spawn({
        let other = Arc::clone(&other);
        async move { other.batch_execute(&insert_x).await }
    });
    wait_until("the other writer waits on the batch's X", || async { lock_waiters(&db).await >= 2 }).await;
    // Let the batch go on: it wants Y, the other writer's; the server aborts the batch.
    hold_a.batch_execute("ROLLBACK").await.unwrap();
    // The other writer's insert of X then goes on, or meets the batch's single retry of
    // X, which may take X first (a unique violation for the other writer): either way
    // the victim was the batch. A deadlock error here would mean the other writer was.
    match tokio::time::timeout(PATIENCE, waits_on_x).await.expect("the deadlock was never broken").unwrap() {
        Ok(()) => {}
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {}
        Err(e) => panic!("the server aborted the other writer, not the batch: {e:?}"),
    }
    // Retried singly, X now waits on the other writer, which then gives up its rows.
    wait_until("the appends are answered, or one waits on the other writer", || async {
        batch.iter().all(JoinHandle::is_finished) || lock_waiters(&db).await >= 1
    })
    .await;
    other.batch_execute("ROLLBACK").await.unwrap();
    for (stream, outcome) in [x, a, y].into_iter().zip(outcomes(batch).await) {
        assert!(outcome.is_ok(), "stream {stream}: a deadlock of its batch answered {outcome:?}");
    }
}
