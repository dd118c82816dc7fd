//! Shards taken over from a dead relay are read at once, not after the survivor's own
//! shards run dry.

use std::time::Duration;

use nix::sys::signal::Signal;
use orders_testkit::sequence::Sequences;
use tokio::time::Instant;

use crate::helpers::{World, assert_complete_and_ordered, read_until};

/// Two relays share a backlog; one is killed. The survivor takes its shards at its next
/// rebalance, and must drain them while its own shards still have rows: after a broker
/// outage, say, the dead relay's orders would otherwise wait for the whole backlog.
#[tokio::test]
async fn a_survivor_drains_a_killed_relays_shards_while_its_own_still_have_rows() {
    let world = World::new().await;
    let (orders, versions) = (300, 200);
    world.prefill(orders, versions).await; // 60,000 rows, spread over every shard
    let mut env = world.env();
    env.push(("BATCH_SIZE".into(), "50".into()));
    let survivor = world.start_relay(&env).await;
    let mut doomed = world.start_relay(&env).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    let before = loop {
        let owners = world.shard_owners().await;
        if owners.len() == 2 && owners.values().all(|s| s.len() == 32) {
            break owners;
        }
        assert!(Instant::now() < deadline, "the relays do not share the shards: {owners:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    doomed.signal(Signal::SIGKILL);
    doomed.wait_exit(Duration::from_secs(30)).await;

    // The survivor's lease session is the one that takes the other's shards.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (own, dead) = loop {
        let owners = world.shard_owners().await;
        if let Some((pid, _)) = owners.iter().find(|(_, shards)| shards.len() == 64) {
            let own = before[pid].clone();
            let dead = before.iter().find(|(p, _)| *p != pid).map(|(_, s)| s.clone()).expect("two relays");
            break (own, dead);
        }
        assert!(Instant::now() < deadline, "the dead relay's shards are not taken over: {owners:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let at_takeover = world.rows_in(&dead).await;
    assert!(
        at_takeover > 1_000,
        "the backlog is not drained yet: {at_takeover} rows of the dead relay's shards"
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (own_left, dead_left) = (world.rows_in(&own).await, world.rows_in(&dead).await);
        if dead_left <= at_takeover - 500 {
            assert!(own_left > 0, "(checked before reading the dead relay's shards)");
            break;
        }
        assert!(
            own_left > 0,
            "the survivor drained its own shards before the ones it took over: {dead_left} of their \
             {at_takeover} rows still wait"
        );
        assert!(Instant::now() < deadline, "the dead relay's shards are not drained: {dead_left} rows left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let reader = world.reader();
    let mut seen = Sequences::default();
    let total = orders as u64 * versions;
    read_until(&reader, &mut seen, total, Duration::from_secs(180)).await;
    assert_complete_and_ordered(&seen, total, orders);
    world.wait_drained(Duration::from_secs(60)).await;
    drop(survivor);
}
