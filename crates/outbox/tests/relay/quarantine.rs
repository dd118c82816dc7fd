//! Rows that can never be published: they must not let later rows of their key overtake
//! them, and they must not hold up the other keys of their shard for ever (they are
//! quarantined after their attempts; later rows of their key wait behind them).

use std::time::Duration;

use orders_eventstore::test_support::TestEvent;
use orders_outbox::{Quarantine, RelayOptions, Selection};
use uuid::Uuid;

use orders_testkit::sequence::Sequences;
use rdkafka::Message as _;

use crate::helpers::{Running, World, read_until, version_of, versions_of};

/// The relay's producer refuses the first row at once (`send` fails: larger than its
/// `message.max.bytes`). The rows read with it in the same batch were not handed to the
/// producer; the next batch must not go past them: version 2 of `a` on the topic before
/// version 1 would break the order of `a`.
#[tokio::test]
async fn rows_after_an_enqueue_failure_are_not_published_ahead_of_it() {
    let world = World::new().await;
    let (bad, a) = (Uuid::now_v7(), Uuid::now_v7());
    world.append_event(world.oversized(bad, 1)).await;
    world.append(a, 1).await;
    world.append(a, 2).await;
    let others: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    world.write(&others, 2, 1).await;
    // Batches of two: the refused row and a's version 1 are read together, and the
    // full batch would be pipelined.
    let relay = Running::start(world.strict_relay(RelayOptions { batch_size: 2, ..World::options() }));
    let reader = world.reader();

    let (seen, messages) = read_until(&reader, 10, Duration::from_secs(60)).await;
    let versions = versions_of(&messages, a);
    assert_eq!(
        versions.first(),
        Some(&1),
        "the first copy of a's events must be version 1, saw {versions:?}"
    );
    assert!(seen.out_of_order.is_empty(), "{:?}", seen.out_of_order);
    assert_eq!(seen.distinct(), 10, "every row of the other keys is published: {seen:?}");
    relay.stop(Duration::from_secs(30)).await;
}

/// A row the producer can never publish is quarantined after its attempts with the
/// reason; the later rows of its key wait in the outbox; every other key goes on, and
/// the relay stays ready.
#[tokio::test]
async fn a_row_that_can_never_be_published_is_quarantined_and_only_its_key_waits() {
    let world = World::new().await;
    let (bad, a, b) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    world.append(bad, 1).await;
    world.append_event(world.oversized(bad, 2)).await;
    world.append(a, 1).await;
    world.append(bad, 3).await;
    world.append(b, 1).await;
    world.append(a, 2).await;
    world.append(bad, 4).await;
    world.append(b, 2).await;
    let relay = Running::start(world.strict_relay(World::options()));
    let reader = world.reader();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let (mut seen, mut messages) = (Sequences::default(), Vec::new());
    let highest = |seen: &Sequences, key: Uuid| seen.highest(key.to_string().as_bytes());
    while highest(&seen, a) < 2 || highest(&seen, b) < 2 || highest(&seen, bad) < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the other keys of the shard set are not published: {seen:?}"
        );
        assert!(relay.status.check().is_ok(), "not ready: {:?}", relay.status.check());
        if let Ok(message) = tokio::time::timeout(Duration::from_millis(200), reader.recv()).await {
            let message = message.expect("consume").detach();
            seen.observe(message.key().expect("key"), version_of(&message));
            messages.push(message);
        }
    }
    assert!(seen.out_of_order.is_empty(), "{:?}", seen.out_of_order);
    assert_eq!(versions_of(&messages, bad), vec![1], "only the row before the bad one is published");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let quarantined = loop {
        let rows = world.quarantined().await;
        if !rows.is_empty() {
            break rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "the bad row is not quarantined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    let (_, key, attempts, reason) = &quarantined[0];
    assert_eq!(key, &bad.to_string());
    assert_eq!(*attempts, 1, "refused by the producer itself: quarantined at its first attempt");
    assert!(reason.contains("too large"), "the reason says why: {reason}");
    assert_eq!(world.rows_of(bad).await, 2, "the later rows of its key wait in the outbox");
    assert!(
        relay.status.check().is_ok(),
        "a quarantined row leaves the relay ready: {:?}",
        relay.status.check()
    );

    // Nothing of the bad key gets through while its row is quarantined.
    world.append(a, 3).await;
    // (A fresh `Sequences` counts a's version 3 as 3 distinct versions.)
    let (_, batch) = read_until(&reader, 3, Duration::from_secs(60)).await;
    assert_eq!(versions_of(&batch, a), vec![3], "a's version 3 is published");
    assert!(versions_of(&batch, bad).is_empty(), "the waiting rows stay: {batch:?}");
    assert_eq!(world.rows_of(bad).await, 2);
    relay.stop(Duration::from_secs(30)).await;
}

/// A row addressed to a topic that does not exist fails on delivery (the producer
/// learns the topic is missing from the broker): quarantined the same way, and the
/// next row of its key (for the same topic: order per key holds within a topic) waits.
#[tokio::test]
async fn a_row_for_a_missing_topic_is_quarantined_and_the_others_go_on() {
    let world = World::new().await;
    let (bad, a) = (Uuid::now_v7(), Uuid::now_v7());
    let missing = format!("{}-missing", world.topic);
    world.append_event(TestEvent::new(&missing, bad, 1)).await;
    world.append(a, 1).await;
    world.append_event(TestEvent::new(&missing, bad, 2)).await;
    world.append(a, 2).await;
    let relay = Running::start(world.relay_configured(
        &orders_testkit::kafka::bootstrap_servers(),
        &[("topic.metadata.propagation.max.ms", "500")],
        World::options(),
    ));
    let reader = world.reader();

    let (seen, messages) = read_until(&reader, 2, Duration::from_secs(60)).await;
    assert_eq!(versions_of(&messages, a), vec![1, 2], "the other key goes on: {seen:?}");
    assert!(versions_of(&messages, bad).is_empty());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while world.quarantined().await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the row for the missing topic is not quarantined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let quarantined = world.quarantined().await;
    assert!(quarantined[0].3.to_lowercase().contains("unknown topic"), "{quarantined:?}");
    assert_eq!(world.rows_of(bad).await, 1, "version 2 of the key waits");
    relay.stop(Duration::from_secs(30)).await;
}

/// Re-queued after the cause is fixed (here: a relay whose producer takes larger
/// records), the quarantined row goes back before the rows of its key that waited
/// behind it; a discarded one lets them go on.
#[tokio::test]
async fn a_requeued_row_is_published_before_the_rows_of_its_key_that_waited_and_a_discarded_one_lets_them_go()
{
    let world = World::new().await;
    let (bad, dropped, a) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    world.append_event(world.oversized(bad, 1)).await;
    world.append_event(world.oversized(dropped, 1)).await;
    world.append(bad, 2).await;
    world.append(dropped, 2).await;
    world.append(a, 1).await;
    let strict = Running::start(world.strict_relay(World::options()));
    let reader = world.reader();
    let (seen, _) = read_until(&reader, 1, Duration::from_secs(60)).await;
    assert_eq!(seen.highest(a.to_string().as_bytes()), 1);
    let quarantine = Quarantine::new(world.db.pool().clone(), Some(crate::helpers::CHANNEL.into()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let rows = loop {
        let rows = quarantine.list(10).await.expect("list");
        if rows.len() == 2 {
            break rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "not both quarantined: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(rows[0].key, bad.to_string().into_bytes());
    assert_eq!(rows[0].waiting, 1, "one row of its key waits behind it");
    assert_eq!(rows[0].attempts, 1, "refused by the producer itself: quarantined at once");
    assert!(rows[0].payload_bytes >= 200_000);
    strict.stop(Duration::from_secs(30)).await;

    let relay = Running::start(world.relay(World::options()));
    let requeued = quarantine.requeue(&Selection::Ids(vec![rows[0].id, 999_999])).await.expect("requeue");
    assert_eq!(requeued, vec![rows[0].id], "only quarantined ids are re-queued");
    assert_eq!(
        quarantine.discard(&Selection::Ids(vec![rows[1].id])).await.expect("discard"),
        vec![rows[1].id]
    );
    // bad: 1 and 2; dropped: 2 (counted as 2 distinct by its highest version).
    let (seen, messages) = read_until(&reader, 4, Duration::from_secs(60)).await;
    assert_eq!(versions_of(&messages, bad), vec![1, 2], "the re-queued row first, then the one that waited");
    assert_eq!(versions_of(&messages, dropped), vec![2], "the discarded row's key goes on without it");
    assert!(seen.out_of_order.len() == 1, "only the discarded version is missing: {:?}", seen.out_of_order);
    assert!(quarantine.list(10).await.expect("list").is_empty());
    relay.stop(Duration::from_secs(30)).await;
}

/// The broker refuses a record (larger than its topic's `max.message.bytes`): with the
/// gapless guarantee the producer stops rather than send the later records of the key
/// after the gap; the relay renews its producer, retries, and quarantines the row after
/// its attempts. No later row of its key gets through, the other keys do.
#[tokio::test]
async fn a_record_the_broker_refuses_is_quarantined_and_no_later_row_of_its_key_overtakes_it() {
    let world = World::with_topic_configs(&[("max.message.bytes", "10000")]).await;
    let (bad, a, b) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut payload = b"1".to_vec();
    payload.resize(20_000, b' ');
    world.append_event(TestEvent::new(&world.topic, bad, 1).payload(payload)).await;
    world.append(a, 1).await;
    world.append(bad, 2).await;
    world.append(b, 1).await;
    world.append(a, 2).await;
    world.append(bad, 3).await;
    world.append(b, 2).await;
    let relay = Running::start(world.relay(World::options()));
    let reader = world.reader();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while world.quarantined().await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the refused row is not quarantined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let quarantined = world.quarantined().await;
    assert_eq!(quarantined.len(), 1, "only the refused row: {quarantined:?}");
    assert_eq!(quarantined[0].1, bad.to_string());
    assert!(quarantined[0].3.contains("too large"), "{quarantined:?}");
    let (seen, messages) = read_until(&reader, 4, Duration::from_secs(60)).await;
    assert_eq!(versions_of(&messages, a), vec![1, 2], "{seen:?}");
    assert_eq!(versions_of(&messages, b), vec![1, 2], "{seen:?}");
    world.append(a, 3).await;
    let (_, more) = read_until(&reader, 3, Duration::from_secs(60)).await;
    assert_eq!(versions_of(&more, a), vec![3]);
    assert!(
        versions_of(&messages, bad).is_empty() && versions_of(&more, bad).is_empty(),
        "nothing of the key"
    );
    assert_eq!(world.rows_of(bad).await, 2, "the later rows of its key wait");
    assert!(relay.status.check().is_ok(), "{:?}", relay.status.check());
    relay.stop(Duration::from_secs(30)).await;
}

/// Liveness: a row the producer refuses before sending it (larger than its
/// `message.max.bytes`: the same on every attempt) is quarantined at its first attempt,
/// not after `quarantine_after` rounds of backoff during which every shard of its worker
/// waits.
#[tokio::test]
async fn a_record_the_producer_refuses_locally_is_quarantined_at_once() {
    let world = World::new().await;
    let (bad, a) = (Uuid::now_v7(), Uuid::now_v7());
    world.append_event(world.oversized(bad, 1)).await;
    world.append(a, 1).await;
    // So many attempts that only an immediate quarantine happens within the test.
    let options = RelayOptions {
        quarantine_after: 1_000,
        retry_backoff_min: Duration::from_secs(1),
        retry_backoff_max: Duration::from_secs(5),
        ..World::options()
    };
    let relay = Running::start(world.strict_relay(options));
    let reader = world.reader();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while world.quarantined().await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the locally refused row is not quarantined at once");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let quarantined = world.quarantined().await;
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!((quarantined[0].1.as_str(), quarantined[0].2), (bad.to_string().as_str(), 1));
    let (_, messages) = read_until(&reader, 1, Duration::from_secs(60)).await;
    assert_eq!(versions_of(&messages, a), vec![1]);
    relay.stop(Duration::from_secs(30)).await;
}

/// Liveness: while a row the broker refuses builds up its attempts, only its key waits:
/// the rows of every other key (read in the same batch, after it) are published long
/// before it is quarantined, not after `quarantine_after` rounds of backoff.
#[tokio::test]
async fn while_a_refused_row_builds_up_attempts_only_its_key_waits() {
    let world = World::with_topic_configs(&[("max.message.bytes", "10000")]).await;
    let bad = Uuid::now_v7();
    let mut payload = b"1".to_vec();
    payload.resize(20_000, b' ');
    world.append_event(TestEvent::new(&world.topic, bad, 1).payload(payload)).await;
    world.append(bad, 2).await;
    let others: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    world.write(&others, 2, 4).await;
    // At least 1 + 2 + 4 + 4 * 5 = 27 s of backoff before the quarantine.
    let options = RelayOptions {
        quarantine_after: 9,
        retry_backoff_min: Duration::from_secs(1),
        retry_backoff_max: Duration::from_secs(4),
        ..World::options()
    };
    let relay = Running::start(world.relay(options));
    let reader = world.reader();

    let (seen, messages) = read_until(&reader, 40, Duration::from_secs(60)).await;
    assert_eq!(seen.distinct(), 40, "the other keys' rows are published: {seen:?}");
    assert!(seen.out_of_order.is_empty(), "{:?}", seen.out_of_order);
    assert!(versions_of(&messages, bad).is_empty(), "nothing of the refused key");
    assert!(
        world.quarantined().await.is_empty(),
        "the other keys waited until the refused row was quarantined"
    );
    assert_eq!(world.rows_of(bad).await, 2, "the refused row and the one behind it wait");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while world.quarantined().await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the refused row is not quarantined");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let quarantined = world.quarantined().await;
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!((quarantined[0].1.as_str(), quarantined[0].2), (bad.to_string().as_str(), 9));
    assert_eq!(world.rows_of(bad).await, 1, "the later row of its key waits");
    relay.stop(Duration::from_secs(30)).await;
}

/// The broker refuses a whole record batch with one error code (here: larger than the
/// topic's `max.message.bytes`), so every row of that batch fails the same way. The
/// innocent rows read with the oversized one, before and after it in the same
/// partition and linger batch, must be published; only the oversized row may be
/// charged with attempts and quarantined.
#[tokio::test]
async fn rows_refused_with_an_oversized_one_in_the_same_record_batch_are_not_quarantined() {
    let mut world = World::new().await;
    // One partition: every row in the same partition and, with a long linger, the same
    // record batch.
    let topic = world.kafka.topic_with("single", 1, &[("max.message.bytes", "10000")]).await;
    let (innocent, bad, after) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    let mut payload = b"1".to_vec();
    payload.resize(20_000, b' ');
    world.append_event(TestEvent::new(&topic, innocent, 1)).await;
    world.append_event(TestEvent::new(&topic, bad, 1).payload(payload)).await;
    world.append_event(TestEvent::new(&topic, after, 1)).await;
    let relay = Running::start(world.relay_configured(
        &orders_testkit::kafka::bootstrap_servers(),
        &[("linger.ms", "200")],
        World::options(),
    ));
    let reader = world.kafka.consumer_from_start(&topic, 1);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while world.quarantined().await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the oversized row is not quarantined");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (seen, messages) = read_until(&reader, 2, Duration::from_secs(60)).await;
    assert_eq!(versions_of(&messages, innocent), vec![1], "{seen:?}");
    assert_eq!(versions_of(&messages, after), vec![1], "{seen:?}");
    let quarantined = world.quarantined().await;
    assert_eq!(
        quarantined.iter().map(|q| q.1.clone()).collect::<Vec<_>>(),
        vec![bad.to_string()],
        "only the oversized row is quarantined: {quarantined:?}"
    );
    assert!(quarantined[0].3.contains("too large"), "{quarantined:?}");
    assert_eq!(world.outbox_rows().await, 0);
    relay.stop(Duration::from_secs(30)).await;
}
