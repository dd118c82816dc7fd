//! The relay in-process against the real PostgreSQL and Kafka (`make up`): publishing
//! with keys and headers, waking on NOTIFY, not skipping rows committed out of id order,
//! sharing shards between replicas, and a shutdown that never clears a row whose
//! publication is unknown.

#![allow(clippy::unwrap_used)]

mod helpers;
mod quarantine;
mod writer;

use std::{collections::BTreeSet, time::Duration};

use helpers::{Running, World, header, read_until};
use orders_outbox::{RelayOptions, SessionKeepalive};
use orders_testkit::proxy::TcpProxy;
use rdkafka::Message as _;
use uuid::Uuid;

const SHARDS: usize = 64;

#[tokio::test]
async fn publishes_rows_with_key_and_headers_then_clears_them() {
    let world = World::new().await;
    let relay = Running::start(world.relay(World::options()));
    let reader = world.reader();
    let orders: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    world.write(&orders, 5, 8).await;

    let (seen, messages) = read_until(&reader, 100, Duration::from_secs(60)).await;
    assert_eq!(seen.distinct(), 100, "{seen:?}");
    assert!(seen.out_of_order.is_empty(), "{:?}", seen.out_of_order);
    assert_eq!(seen.keys(), 20);
    let first = messages.iter().find(|m| m.key() == Some(orders[0].to_string().as_bytes())).unwrap();
    assert_eq!(header(first, "event-type").as_deref(), Some("OrderTouched"));
    assert!(header(first, "traceparent").unwrap().starts_with(&format!("00-{}-", orders[0].simple())));

    world.wait_drained(Duration::from_secs(60)).await;
    relay.stop(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_notification_wakes_the_relay_without_waiting_for_the_poll() {
    let world = World::new().await;
    // Polling once an hour: within the test's time, only a notification wakes it.
    let options = helpers::RelayOptionsExt::no_polling(World::options());
    let relay = Running::start(world.relay(options));
    relay.wait_for_shards(SHARDS, Duration::from_secs(60)).await;
    let reader = world.reader();
    // A first row, once the relay owns every shard: published only if the NOTIFY of
    // its commit woke the relay (its start-up reads are over by then or saw it).
    world.append(Uuid::now_v7(), 1).await;
    let (seen, _) = read_until(&reader, 1, Duration::from_secs(60)).await;
    assert_eq!(seen.distinct(), 1, "the first row is published");
    // A second one, the relay idle now for sure: only the notification can wake it.
    world.wait_drained(Duration::from_secs(60)).await;
    world.append(Uuid::now_v7(), 1).await;
    let (seen, _) = read_until(&reader, 1, Duration::from_secs(60)).await;
    assert_eq!(seen.distinct(), 1, "woken by the notification, not by a poll an hour away");
    relay.stop(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_row_committed_after_a_later_id_is_not_skipped() {
    let world = World::new().await;
    let relay = Running::start(world.relay(World::options()));
    relay.wait_for_shards(SHARDS, Duration::from_secs(60)).await;
    let reader = world.reader();

    // Two keys of the same shard: a reader with a per-shard "last id seen" would lose
    // the first one.
    let early = Uuid::now_v7();
    let shard = orders_eventstore::outbox_shard(early.to_string().as_bytes());
    let late = std::iter::repeat_with(Uuid::now_v7)
        .find(|k| orders_eventstore::outbox_shard(k.to_string().as_bytes()) == shard)
        .unwrap();

    // The transaction of `early` takes the smaller id but commits last.
    let mut client = world.db.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let headers = serde_json::json!({});
    tx.execute(
        "INSERT INTO outbox (shard, topic, key, payload, headers) VALUES ($1, $2, $3, $4, $5)",
        &[&shard, &world.topic, &early.to_string().into_bytes(), &b"1".to_vec(), &headers],
    )
    .await
    .unwrap();
    world.append(late, 1).await;
    let (seen, _) = read_until(&reader, 1, Duration::from_secs(60)).await;
    assert_eq!(seen.highest(late.to_string().as_bytes()), 1, "the later id is published first");
    // The relay has cleared the later id: it has read past the uncommitted one.
    world.wait_drained(Duration::from_secs(60)).await;

    tx.commit().await.unwrap();
    let (seen, _) = read_until(&reader, 1, Duration::from_secs(60)).await;
    assert_eq!(seen.highest(early.to_string().as_bytes()), 1, "the row committed late is published");
    relay.stop(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn replicas_share_the_shards_and_take_over_from_a_stopped_one() {
    let world = World::new().await;
    let relays: Vec<Running> = (0..3).map(|_| Running::start(world.relay(World::options()))).collect();

    let owned = |relays: &[Running]| -> Vec<BTreeSet<i32>> {
        relays.iter().map(|r| r.status.owned_shards().into_iter().collect()).collect()
    };
    let balanced = |sets: &[BTreeSet<i32>], share: usize| {
        let all: BTreeSet<i32> = sets.iter().flatten().copied().collect();
        let total: usize = sets.iter().map(BTreeSet::len).sum();
        all.len() == SHARDS && total == SHARDS && sets.iter().all(|s| s.len() <= share)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // Each replica sees the others at its next membership read: wait for both.
    while !(balanced(&owned(&relays), SHARDS.div_ceil(3)) && relays.iter().all(|r| r.status.members() == 3)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not balanced: {:?}, members seen: {:?}",
            owned(&relays),
            relays.iter().map(|r| r.status.members()).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Events flow while one replica leaves; the others take its shards.
    let reader = world.reader();
    let orders: Vec<Uuid> = (0..30).map(|_| Uuid::now_v7()).collect();
    let mut relays = relays;
    let leaving = relays.pop().unwrap();
    let writing = world.write(&orders, 10, 10);
    let stopping = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        leaving.stop(Duration::from_secs(30)).await;
    };
    tokio::join!(writing, stopping);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !balanced(&owned(&relays), SHARDS.div_ceil(2)) {
        assert!(tokio::time::Instant::now() < deadline, "not taken over: {:?}", owned(&relays));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (seen, _) = read_until(&reader, 300, Duration::from_secs(60)).await;
    assert_eq!(seen.distinct(), 300, "{seen:?}");
    assert!(seen.out_of_order.is_empty(), "{:?}", seen.out_of_order);
    for relay in relays {
        relay.stop(Duration::from_secs(30)).await;
    }
}

#[tokio::test]
async fn shutdown_with_the_broker_unreachable_clears_no_unacknowledged_row() {
    let world = World::new().await;
    let broker = orders_testkit::kafka::bootstrap_servers().parse().unwrap();
    let proxy = TcpProxy::kafka(broker).await;
    let relay = Running::start(world.relay_via(&proxy.addr().to_string(), World::options()));
    relay.wait_for_shards(SHARDS, Duration::from_secs(60)).await;
    let reader = world.reader();
    let before: Vec<Uuid> = (0..10).map(|_| Uuid::now_v7()).collect();
    world.write(&before, 5, 10).await;
    let (seen, _) = read_until(&reader, 50, Duration::from_secs(60)).await;
    assert_eq!(seen.distinct(), 50, "published through the proxy");
    world.wait_drained(Duration::from_secs(60)).await;

    proxy.cut();
    let during: Vec<Uuid> = (0..10).map(|_| Uuid::now_v7()).collect();
    world.write(&during, 10, 10).await;
    // The rows are read and produced, and their batch waits for acknowledgements that
    // cannot come: the relay reports the stall once it waited the stall threshold (1 s).
    // Generous: on a cold, loaded machine the first batch after the cut may take a while
    // to be read and handed to the producer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while relay.status.check().is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the relay reports the stall");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.stop(Duration::from_secs(30)).await;
    assert_eq!(world.outbox_rows().await, 100, "no row is cleared without an acknowledgement");

    proxy.restore().await;
    let relay = Running::start(world.relay(World::options()));
    let (seen, _) = read_until(&reader, 100, Duration::from_secs(60)).await;
    assert_eq!(seen.distinct(), 100, "{seen:?}");
    assert!(seen.out_of_order.is_empty(), "{:?}", seen.out_of_order);
    relay.stop(Duration::from_secs(30)).await;
}

/// A relay cut off by a silent network partition must not keep its shards for hours:
/// the server's end of the lease session gets short TCP keepalives and a user timeout.
#[tokio::test]
async fn the_lease_session_has_short_server_side_keepalives() {
    let world = World::new().await;
    let keepalive = SessionKeepalive {
        idle: Duration::from_secs(7),
        interval: Duration::from_secs(3),
        retries: 4,
        user_timeout: Duration::from_secs(20),
    };
    let relay = Running::start(world.relay(RelayOptions { lease_keepalive: keepalive, ..World::options() }));
    relay.wait_connected(Duration::from_secs(60)).await;
    assert_eq!(relay.status.lease_keepalive(), Some(keepalive), "the server reports them in effect");
    relay.stop(Duration::from_secs(30)).await;

    let relay = Running::start(world.relay(World::options()));
    relay.wait_connected(Duration::from_secs(60)).await;
    let defaults = SessionKeepalive::default();
    assert_eq!(relay.status.lease_keepalive(), Some(defaults), "the defaults are short too");
    assert!(defaults.idle + defaults.interval * defaults.retries <= Duration::from_secs(60));
    relay.stop(Duration::from_secs(30)).await;
}

/// Two workers pipeline their batches through a backlog while the broker keeps
/// refusing records (larger than the topic's `max.message.bytes`), each refusal
/// stopping a producer (gapless guarantee) under batches in flight, and renewing it.
/// Every other row is published, each key in order, and only the refused rows are
/// quarantined.
#[tokio::test]
async fn two_workers_keep_each_key_in_order_while_refused_records_renew_their_producers() {
    let world = World::with_topic_configs(&[("max.message.bytes", "10000")]).await;
    let orders: Vec<Uuid> = (0..40).map(|_| Uuid::now_v7()).collect();
    let bad: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let mut payload = b"1".to_vec();
    payload.resize(20_000, b' ');
    for (round, version) in (1..=15).enumerate() {
        if let Some(order) = bad.get(round) {
            world
                .append_event(
                    orders_eventstore::test_support::TestEvent::new(&world.topic, *order, 1)
                        .payload(payload.clone()),
                )
                .await;
        }
        futures::future::join_all(orders.iter().map(|o| world.append(*o, version))).await;
    }
    let options = RelayOptions { workers: 2, batch_size: 20, quarantine_after: 4, ..World::options() };
    let relay = Running::start(world.relay(options));
    let reader = world.reader();

    let (seen, _) = read_until(&reader, 600, Duration::from_secs(120)).await;
    // Whether the relay stalled or the reader missed records (seen once, in a loaded
    // fresh-clone run: 490 of 600 after 120 s).
    let state = if seen.distinct() == 600 {
        String::new()
    } else {
        format!(
            "rows left in the outbox {}, quarantined {:?}, relay connected {}, shards owned {}, health {:?}",
            world.outbox_rows().await,
            world.quarantined().await,
            relay.status.is_connected(),
            relay.status.owned_shards().len(),
            relay.status.check()
        )
    };
    assert_eq!(seen.distinct(), 600, "{state}; {seen:?}");
    assert!(seen.out_of_order.is_empty(), "{:?}", seen.out_of_order);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while world.quarantined().await.len() < bad.len() {
        assert!(tokio::time::Instant::now() < deadline, "not all refused rows are quarantined");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Rows are cleared after their acknowledgement, which may come after the reader saw them.
    world.wait_drained(Duration::from_secs(60)).await;
    relay.stop(Duration::from_secs(30)).await;
}
