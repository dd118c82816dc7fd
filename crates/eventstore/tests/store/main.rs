//! The event store against a real PostgreSQL (`make up`), one fresh database per test.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod deadlocks;
mod failures;
mod migrations;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use orders_eventstore::{
    Append, Error, EventStore, GroupCommit, IdempotencyRecord, NewEvent, Options, OutboxMessage, Snapshot,
    outbox_shard,
};
use orders_testkit::postgres::TestDatabase;
use uuid::Uuid;

async fn store(db: &TestDatabase) -> EventStore {
    store_with(db, None).await
}

/// Group commit on or off: the guarantees must be the same.
async fn store_with(db: &TestDatabase, group_commit: Option<GroupCommit>) -> EventStore {
    let pool = orders_testkit::postgres::pool(db.url(), 32);
    let store = EventStore::new(
        pool,
        Options { notify_channel: Some("outbox".into()), group_commit, ..Options::default() },
    );
    store.migrate().await.unwrap();
    store
}

const MODES: [Option<GroupCommit>; 2] =
    [None, Some(GroupCommit { committers: 2, max_batch: 8, max_queued: 1024 })];

pub fn event(version: u64) -> NewEvent {
    NewEvent {
        event_id: Uuid::now_v7(),
        version,
        event_type: "Happened".into(),
        payload: vec![version as u8],
    }
}

pub fn outbox_for(stream: Uuid, events: &[NewEvent]) -> Vec<OutboxMessage> {
    events
        .iter()
        .map(|e| OutboxMessage {
            topic: "orders".into(),
            key: stream.to_string().into_bytes(),
            payload: e.payload.clone(),
            headers: BTreeMap::from([("event_type".to_string(), e.event_type.clone())]),
        })
        .collect()
}

pub fn append<'a>(
    stream: Uuid,
    expected: u64,
    events: &'a [NewEvent],
    outbox: &'a [OutboxMessage],
) -> Append<'a> {
    Append {
        stream_id: stream,
        expected_version: expected,
        events,
        outbox,
        snapshot: None,
        idempotency: None,
    }
}

pub async fn count(store: &EventStore, sql: &str, stream: Uuid) -> i64 {
    let client = store.pool().get().await.unwrap();
    client.query_one(sql, &[&stream]).await.unwrap().get(0)
}

#[tokio::test]
async fn migrations_apply_once_even_when_run_concurrently() {
    let db = TestDatabase::create().await;
    let pool = orders_testkit::postgres::pool(db.url(), 8);
    let store = EventStore::new(pool, Options::default());
    let (a, b) = tokio::join!(store.migrate(), store.migrate());
    a.unwrap();
    b.unwrap();
    store.migrate().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_racing_on_one_version_give_exactly_one_winner() {
    let db = TestDatabase::create().await;
    for mode in MODES {
        sixteen_writers_on_one_version(&db, mode).await;
    }
}

async fn sixteen_writers_on_one_version(db: &TestDatabase, mode: Option<GroupCommit>) {
    let store = Arc::new(store_with(db, mode).await);
    let stream = Uuid::now_v7();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let events = [event(1)];
                let outbox = outbox_for(stream, &events);
                store.append(append(stream, 0, &events, &outbox)).await
            })
        })
        .collect();
    let mut wins = 0;
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => wins += 1,
            Err(Error::Conflict { expected: 0, .. }) => conflicts += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!((wins, conflicts), (1, 15), "group commit: {mode:?}");
    // Outbox rows exist exactly for the committed event.
    assert_eq!(count(&store, "SELECT count(*) FROM events WHERE stream_id = $1", stream).await, 1);
    let key = stream.to_string().into_bytes();
    let client = store.pool().get().await.unwrap();
    let rows: i64 =
        client.query_one("SELECT count(*) FROM outbox WHERE key = $1", &[&key]).await.unwrap().get(0);
    assert_eq!(rows, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_that_retry_produce_gapless_versions() {
    let db = TestDatabase::create().await;
    for mode in MODES {
        retrying_writers(&db, mode).await;
    }
}

async fn retrying_writers(db: &TestDatabase, mode: Option<GroupCommit>) {
    let store = Arc::new(store_with(db, mode).await);
    let stream = Uuid::now_v7();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut lost = 0;
                loop {
                    let version = store.load(stream).await.unwrap().version();
                    let events = [event(version + 1)];
                    match store.append(append(stream, version, &events, &[])).await {
                        Ok(()) => return (version + 1, lost),
                        Err(Error::Conflict { .. }) => lost += 1,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
            })
        })
        .collect();
    let mut versions = Vec::new();
    for task in tasks {
        versions.push(task.await.unwrap().0);
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=16).collect::<Vec<_>>(), "each writer won exactly one version ({mode:?})");
    let history = store.history(stream).await.unwrap();
    assert_eq!(history.iter().map(|e| e.version).collect::<Vec<_>>(), (1..=16).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_failed_append_writes_nothing() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let stream = Uuid::now_v7();
    let first = [event(1)];
    store.append(append(stream, 0, &first, &outbox_for(stream, &first))).await.unwrap();

    // A stale writer with two events and their outbox rows: none of it may land.
    let stale = [event(1), event(2)];
    let err = store.append(append(stream, 0, &stale, &outbox_for(stream, &stale))).await.unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(count(&store, "SELECT count(*) FROM events WHERE stream_id = $1", stream).await, 1);
    let client = store.pool().get().await.unwrap();
    let key = stream.to_string().into_bytes();
    let payloads: Vec<Vec<u8>> = client
        .query("SELECT payload FROM outbox WHERE key = $1 ORDER BY id", &[&key])
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(payloads, vec![first[0].payload.clone()]);
    let shard: i32 =
        client.query_one("SELECT shard FROM outbox WHERE key = $1", &[&key]).await.unwrap().get(0);
    assert_eq!(shard, outbox_shard(&key));
}

#[tokio::test]
async fn versions_that_do_not_follow_are_refused_before_touching_the_database() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let events = [event(2)];
    let err = store.append(append(Uuid::now_v7(), 0, &events, &[])).await.unwrap_err();
    assert!(matches!(err, Error::InvalidAppend(_)), "{err}");
}

#[tokio::test]
async fn load_reads_the_snapshot_and_only_later_events() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let stream = Uuid::now_v7();
    let first = [event(1), event(2), event(3)];
    let snapshot = Snapshot { version: 3, state: b"state at 3".to_vec() };
    store.append(Append { snapshot: Some(&snapshot), ..append(stream, 0, &first, &[]) }).await.unwrap();
    let later = [event(4)];
    store.append(append(stream, 3, &later, &[])).await.unwrap();

    let loaded = store.load(stream).await.unwrap();
    assert_eq!(loaded.snapshot, Some(snapshot));
    assert_eq!(loaded.events.iter().map(|e| e.version).collect::<Vec<_>>(), vec![4]);
    assert_eq!(loaded.version(), 4);
    assert_eq!(store.history(stream).await.unwrap().len(), 4);
    assert_eq!(store.load(Uuid::now_v7()).await.unwrap().version(), 0);
}

#[tokio::test]
async fn an_idempotency_key_is_recorded_with_the_effect_and_only_once() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let record = |stream: Uuid| IdempotencyRecord {
        key: "http:abc".into(),
        request_hash: vec![1, 2, 3],
        status: 201,
        response: serde_json::json!({ "order_id": stream }),
        ttl: Duration::from_secs(60),
    };
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let events = [event(1)];
    let first = record(a);
    store.append(Append { idempotency: Some(&first), ..append(a, 0, &events, &[]) }).await.unwrap();

    // A second effect under the same key is refused whole.
    let second = record(b);
    let other_events = [event(1)];
    let err = store
        .append(Append { idempotency: Some(&second), ..append(b, 0, &other_events, &[]) })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateIdempotencyKey(ref k) if k == "http:abc"), "{err}");
    assert!(store.history(b).await.unwrap().is_empty());

    let stored = store.find_idempotency("http:abc").await.unwrap().unwrap();
    assert_eq!(stored.status, 201);
    assert_eq!(stored.response, serde_json::json!({ "order_id": a }));
    assert!(store.find_idempotency("http:other").await.unwrap().is_none());
}

#[tokio::test]
async fn expired_idempotency_records_are_forgotten_and_purged() {
    let db = TestDatabase::create().await;
    let store = store(&db).await;
    let short = IdempotencyRecord {
        key: "command:1".into(),
        request_hash: vec![],
        status: 409,
        response: serde_json::json!({}),
        ttl: Duration::from_millis(10),
    };
    store.record_answer(&short).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(store.find_idempotency("command:1").await.unwrap().is_none());
    // An expired key can be used again.
    store.record_answer(&IdempotencyRecord { ttl: Duration::from_secs(60), ..short.clone() }).await.unwrap();
    assert!(store.find_idempotency("command:1").await.unwrap().is_some());
    let err = store.record_answer(&short).await.unwrap_err();
    assert!(matches!(err, Error::DuplicateIdempotencyKey(_)));
    store.record_answer(&IdempotencyRecord { key: "command:2".into(), ..short }).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.purge_expired_idempotency().await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_writes_many_streams_in_shared_transactions_without_losing_any() {
    let db = TestDatabase::create().await;
    let store =
        Arc::new(store_with(&db, Some(GroupCommit { committers: 2, max_batch: 16, max_queued: 1024 })).await);
    let streams: Vec<Uuid> = (0..200).map(|_| Uuid::now_v7()).collect();
    let tasks: Vec<_> = streams
        .iter()
        .map(|stream| {
            let (store, stream) = (Arc::clone(&store), *stream);
            tokio::spawn(async move {
                let events = [event(1), event(2)];
                let outbox = outbox_for(stream, &events);
                let record = IdempotencyRecord {
                    key: format!("k-{stream}"),
                    request_hash: vec![],
                    status: 201,
                    response: serde_json::json!({}),
                    ttl: Duration::from_secs(60),
                };
                store
                    .append(Append { idempotency: Some(&record), ..append(stream, 0, &events, &outbox) })
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let client = store.pool().get().await.unwrap();
    let count = |sql: &'static str| {
        let client = &client;
        async move { client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM events").await, 400);
    assert_eq!(count("SELECT count(*) FROM outbox").await, 400);
    assert_eq!(count("SELECT count(*) FROM idempotency_records").await, 200);
    for stream in streams.iter().take(5) {
        assert_eq!(store.history(*stream).await.unwrap().len(), 2);
    }
}
