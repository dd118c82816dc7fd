//! The consumer against the real Kafka and PostgreSQL of `make up`.

mod helpers;

use std::{collections::HashMap, sync::atomic::Ordering, time::Duration};

use helpers::{Effects, Script, Scripted, World, eventually, header, keys, payload, read};
use orders_consumer::{Retry, Selection, Settings, dead_letter::header as dlq};
use orders_testkit::postgres::TestDatabase;
use rdkafka::Message as _;

const DEADLINE: Duration = Duration::from_secs(120);

/// 1,000 records over 2 partitions, handlers that sleep: many keys are handled at once,
/// and each key's records in order, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_run_concurrently_and_each_key_in_order() {
    let world = World::new(2).await;
    let keys = keys(200);
    world.send_versions(&keys, 5).await;
    let sleep = Duration::from_millis(20);
    let handler = Scripted::sleeping(sleep);
    let running = world.start(world.settings(), std::sync::Arc::clone(&handler));
    eventually(DEADLINE, "a first record handled", || !handler.handled().is_empty()).await;
    let started = std::time::Instant::now();
    eventually(DEADLINE, "every record handled", || handler.handled().len() >= 1000).await;
    let wall = started.elapsed();
    running.stop().await;
    let serial = sleep * 1000;
    assert!(wall < serial / 4, "1,000 records took {wall:?}, against {serial:?} one at a time");
    for key in &keys {
        assert_eq!(handler.versions_of(key), vec![1, 2, 3, 4, 5], "{key}");
    }
    let concurrent = handler.max_concurrent.load(Ordering::SeqCst);
    assert!(concurrent >= 16, "at most {concurrent} records were handled at once");
}

/// With concurrency 1 the same consumer handles one record at a time.
#[tokio::test]
async fn concurrency_one_handles_one_record_at_a_time() {
    let world = World::new(1).await;
    let keys = keys(10);
    world.send_versions(&keys, 2).await;
    let handler = Scripted::sleeping(Duration::from_millis(5));
    let running =
        world.start(Settings { concurrency: 1, ..world.settings() }, std::sync::Arc::clone(&handler));
    eventually(DEADLINE, "every record handled", || handler.handled().len() >= 20).await;
    running.stop().await;
    assert_eq!(handler.max_concurrent.load(Ordering::SeqCst), 1);
}

/// A key whose record fails transiently twice is retried and succeeds on the third
/// attempt; the other keys do not wait for it.
#[tokio::test]
async fn a_transient_failure_is_retried_and_holds_back_only_its_key() {
    let world = World::new(1).await;
    let handler = Scripted::sleeping(Duration::ZERO);
    handler.set("flaky", Some(Script::FailTimes(2)));
    world.send("flaky", b"1").await;
    world.send("flaky", b"2").await;
    let others = keys(20);
    world.send_versions(&others, 1).await;
    let settings = Settings {
        retry: Retry {
            max_attempts: 5,
            min_delay: Duration::from_millis(700),
            max_delay: Duration::from_secs(1),
        },
        ..world.settings()
    };
    let running = world.start(settings, std::sync::Arc::clone(&handler));
    eventually(DEADLINE, "flaky handled", || handler.versions_of("flaky").len() == 2).await;
    running.stop().await;
    assert_eq!(handler.versions_of("flaky"), vec![1, 2]);
    assert_eq!(handler.calls_of("flaky"), 4, "three attempts of version 1, one of version 2");
    let handled = handler.handled();
    let first_flaky = handled.iter().position(|(k, _)| k == "flaky").expect("handled");
    assert!(first_flaky >= 20, "the other keys went on while flaky waited: {handled:?}");
}

/// A dependency down for longer than the attempts allowed (`make chaos` found the order
/// processor dead-lettering events while PostgreSQL restarted): the record is retried
/// until it succeeds, never dead-lettered, and its key's later record follows in order.
#[tokio::test]
async fn an_unavailable_dependency_is_waited_for_past_the_attempts() {
    let world = World::new(1).await;
    let handler = Scripted::sleeping(Duration::ZERO);
    handler.set("down", Some(Script::UnavailableTimes(6)));
    world.send("down", b"1").await;
    world.send("down", b"2").await;
    let settings = Settings {
        retry: Retry {
            max_attempts: 2,
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
        },
        ..world.settings()
    };
    let running = world.start(settings, std::sync::Arc::clone(&handler));
    eventually(DEADLINE, "down handled", || handler.versions_of("down").len() == 2).await;
    running.stop().await;
    assert_eq!(handler.versions_of("down"), vec![1, 2]);
    assert_eq!(handler.calls_of("down"), 8, "seven attempts of version 1, one of version 2");
}

/// A record that keeps failing ends in the dead-letter topic with the documented
/// headers, and in the store; the later records of its key are parked, the other keys
/// go on; a replay handles it and then the parked ones, in order, and releases the key.
#[tokio::test]
async fn a_dead_letter_parks_its_key_until_replayed() {
    let world = World::new(2).await;
    let handler = Scripted::sleeping(Duration::ZERO);
    handler.set("bad", Some(Script::AlwaysTransient));
    for version in 1..=3 {
        world.send("bad", version.to_string().as_bytes()).await;
    }
    let others = keys(10);
    world.send_versions(&others, 2).await;
    let running = world.start(world.settings(), std::sync::Arc::clone(&handler));

    let reader = world.dead_letter_reader();
    let letters = read(&reader, 1, DEADLINE).await;
    let letter = &letters[0];
    assert_eq!(payload(letter), "1", "the original bytes");
    assert_eq!(header(letter, dlq::ATTEMPTS).as_deref(), Some("3"));
    assert!(header(letter, dlq::REASON).is_some_and(|r| r.contains("the service is down")));
    assert_eq!(header(letter, dlq::ORIGIN_TOPIC).as_deref(), Some(world.topic.as_str()));
    assert!(header(letter, dlq::ORIGIN_PARTITION).is_some() && header(letter, dlq::ORIGIN_OFFSET).is_some());
    assert_eq!(header(letter, dlq::CONSUMER).as_deref(), Some(world.name.as_str()));
    eventually(DEADLINE, "the other keys handled", || handler.handled().len() >= 20).await;
    let store = world.store.clone();
    let mut parked = 0;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while parked < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the later records of bad are parked");
        parked =
            store.dead_letters(&Selection::default()).await.expect("list").first().map_or(0, |l| l.parked);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(handler.versions_of("bad").is_empty(), "nothing of bad was handled out of order");

    // A record of bad that comes while the consumer runs is parked too.
    world.send("bad", b"4").await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while store.dead_letters(&Selection::default()).await.expect("list")[0].parked < 3 {
        assert!(tokio::time::Instant::now() < deadline, "version 4 is parked");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    handler.set("bad", None);
    let outcome =
        store.replay(&*handler, &Selection::default(), world.settings().retry).await.expect("replay");
    assert_eq!((outcome.settled, outcome.released, outcome.keys_released), (1, 3, 1), "{outcome:?}");
    assert_eq!(handler.versions_of("bad"), vec![1, 2, 3, 4]);
    assert!(store.held_keys().await.expect("held").is_empty());

    // Released: the next record of bad is handled by the consumer as usual.
    world.send("bad", b"5").await;
    eventually(DEADLINE, "version 5 handled", || handler.versions_of("bad").len() == 5).await;
    running.stop().await;
    assert_eq!(handler.versions_of("bad"), vec![1, 2, 3, 4, 5]);
}

/// A record no handler can make sense of (poison) is dead-lettered at once.
#[tokio::test]
async fn a_poison_record_is_dead_lettered_at_once() {
    let world = World::new(1).await;
    let handler = Scripted::sleeping(Duration::ZERO);
    world.send("poison", b"\xff\xfe not a version").await;
    world.send("fine", b"1").await;
    let running = world.start(world.settings(), std::sync::Arc::clone(&handler));
    let letters = read(&world.dead_letter_reader(), 1, DEADLINE).await;
    assert_eq!(letters[0].payload(), Some(&b"\xff\xfe not a version"[..]), "the original bytes");
    assert_eq!(header(&letters[0], dlq::ATTEMPTS).as_deref(), Some("1"), "no retry of a permanent failure");
    assert!(header(&letters[0], dlq::REASON).is_some_and(|r| r.contains("not a version number")));
    eventually(DEADLINE, "the other key handled", || handler.versions_of("fine") == vec![1]).await;
    running.stop().await;
}

/// Held keys survive a restart: a record of a held key that arrives after the
/// consumer restarted is parked, not handled.
#[tokio::test]
async fn held_keys_survive_a_restart() {
    let world = World::new(1).await;
    let handler = Scripted::sleeping(Duration::ZERO);
    handler.set("bad", Some(Script::Permanent));
    world.send("bad", b"1").await;
    let running = world.start(world.settings(), std::sync::Arc::clone(&handler));
    read(&world.dead_letter_reader(), 1, DEADLINE).await;
    running.stop().await;

    handler.set("bad", None);
    let running = world.start(world.settings(), std::sync::Arc::clone(&handler));
    world.send("bad", b"2").await;
    world.send("good", b"1").await;
    eventually(DEADLINE, "good handled", || handler.versions_of("good") == vec![1]).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while world.store.dead_letters(&Selection::default()).await.expect("list")[0].parked < 1 {
        assert!(tokio::time::Instant::now() < deadline, "version 2 of bad is parked after the restart");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(handler.versions_of("bad").is_empty());
    let outcome =
        world.store.discard(&*handler, &Selection::default(), world.settings().retry).await.expect("discard");
    assert_eq!((outcome.settled, outcome.released, outcome.keys_released), (1, 1, 1), "{outcome:?}");
    assert_eq!(handler.versions_of("bad"), vec![2], "discarded 1, released 2");
    running.stop().await;
}

/// The committed position never passes a record still being handled: a slow record
/// at the head of a partition holds the commit, however many records after it are done.
#[tokio::test]
async fn the_commit_stops_at_the_first_unfinished_record() {
    let world = World::new(1).await;
    let handler = Scripted::sleeping(Duration::ZERO);
    handler.set("slow", Some(Script::FailTimes(1)));
    world.send("slow", b"1").await;
    world.send_versions(&keys(30), 1).await;
    let settings = Settings {
        retry: Retry {
            max_attempts: 3,
            min_delay: Duration::from_secs(8),
            max_delay: Duration::from_secs(8),
        },
        ..world.settings()
    };
    let running = world.start(settings, std::sync::Arc::clone(&handler));
    eventually(DEADLINE, "the other keys handled", || handler.handled().len() >= 30).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // a few commit intervals
    let committed_early = committed(&world).await;
    assert!(handler.versions_of("slow").is_empty(), "precondition: slow still waits for its retry");
    assert_eq!(committed_early, Some(0), "nothing past the unfinished record at offset 0");
    eventually(DEADLINE, "slow handled", || handler.versions_of("slow") == vec![1]).await;
    running.stop().await;
    assert_eq!(committed(&world).await, Some(31), "everything, once done");
}

async fn committed(world: &World) -> Option<i64> {
    committed_offsets(world).await.get(&0).copied().flatten()
}

/// The group's committed offset per partition.
async fn committed_offsets(world: &World) -> HashMap<i32, Option<i64>> {
    use rdkafka::{
        Offset, TopicPartitionList,
        consumer::{BaseConsumer, Consumer},
    };
    let consumer: BaseConsumer =
        world.kafka.client_config().set("group.id", &world.name).create().expect("consumer");
    let mut list = TopicPartitionList::new();
    for partition in 0..world.partitions {
        list.add_partition(&world.topic, partition);
    }
    let topic = world.topic.clone();
    tokio::task::spawn_blocking(move || {
        let committed = consumer.committed_offsets(list, Duration::from_secs(10)).expect("committed");
        committed
            .elements_for_topic(&topic)
            .iter()
            .map(|e| (e.partition(), if let Offset::Offset(o) = e.offset() { Some(o) } else { None }))
            .collect()
    })
    .await
    .expect("joined")
}

/// A second replica joins mid-stream (cooperative rebalance) and the first one leaves
/// later: every record's effect is there exactly once, each key's in version order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_mid_stream_loses_and_duplicates_nothing() {
    let world = World::new(4).await;
    // Slow enough (1,000 x 30 ms over 4 at a time) that the second replica joins
    // while the first is still busy.
    let handler = Effects::new(&world, Duration::from_millis(30)).await;
    let keys = keys(200);
    world.send_versions(&keys, 5).await;
    let settings = Settings { concurrency: 4, ..world.settings() };
    let first = world.start(settings.clone(), std::sync::Arc::clone(&handler));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while handler.count().await < 200 {
        assert!(tokio::time::Instant::now() < deadline, "the first replica makes progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = world.start(settings, std::sync::Arc::clone(&handler));
    while handler.count().await < 600 {
        assert!(tokio::time::Instant::now() < deadline, "both replicas make progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.stop().await;
    while handler.count().await < 1000 {
        assert!(tokio::time::Instant::now() < deadline, "the second replica takes over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.stop().await;
    assert_eq!(handler.count().await, 1000, "no effect twice");
    let versions = handler.versions().await;
    for key in &keys {
        assert_eq!(versions.get(key).map(Vec::as_slice), Some(&[1, 2, 3, 4, 5][..]), "{key}");
    }
}

/// A consumer whose database is down from the start retries reading its held keys,
/// and a shutdown meanwhile is a clean stop, not a failure.
#[tokio::test]
async fn a_shutdown_while_the_database_is_down_is_clean() {
    let world = World::new(1).await;
    let unreachable = orders_testkit::postgres::pool("postgres://postgres@127.0.0.1:1/nowhere", 1);
    let store = orders_consumer::Store::new(unreachable, &world.name);
    let token = tokio_util::sync::CancellationToken::new();
    let consumer =
        orders_consumer::Consumer::new(world.settings(), store, Scripted::sleeping(Duration::ZERO))
            .expect("consumer");
    let running = tokio::spawn(consumer.run(token.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await; // a few failed attempts
    token.cancel();
    let outcome = tokio::time::timeout(DEADLINE, running).await.expect("stops in time").expect("no panic");
    assert!(outcome.is_ok(), "{outcome:?}");
}

/// `inbox::claim_all` claims a set of ids in one statement: the ids new to the inbox
/// (one given twice counted once), none that `claim` or an earlier `claim_all` took,
/// and nothing when the transaction rolls back.
#[tokio::test]
async fn claim_all_answers_the_ids_claimed_now() {
    let db = TestDatabase::create().await;
    orders_consumer::Store::new(db.pool().clone(), "claims").migrate().await.expect("migrate");
    let mut client = db.pool().get().await.expect("connection");
    let tx = client.transaction().await.expect("begin");
    assert!(orders_consumer::inbox::claim(&tx, "claims", "a").await.expect("claim"));
    let claimed =
        orders_consumer::inbox::claim_all(&tx, "claims", &["a", "b", "c", "b"]).await.expect("claim");
    assert_eq!(claimed, ["b", "c"].map(String::from).into(), "a was claimed before; b once");
    tx.commit().await.expect("commit");
    let tx = client.transaction().await.expect("begin");
    let claimed = orders_consumer::inbox::claim_all(&tx, "claims", &["c", "d"]).await.expect("claim");
    assert_eq!(claimed, ["d"].map(String::from).into());
    tx.rollback().await.expect("rollback");
    let tx = client.transaction().await.expect("begin");
    let claimed = orders_consumer::inbox::claim_all(&tx, "claims", &["d"]).await.expect("claim");
    assert_eq!(claimed, ["d"].map(String::from).into(), "the rolled-back claim of d is not kept");
    let other = orders_consumer::inbox::claim_all(&tx, "another", &["a"]).await.expect("claim");
    assert_eq!(other, ["a"].map(String::from).into(), "each consumer has its own inbox");
    assert!(orders_consumer::inbox::claim_all(&tx, "claims", &[]).await.expect("claim").is_empty());
}
