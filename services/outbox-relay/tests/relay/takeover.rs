//! Shards taken over from a dead relay are read at once, not after the survivor's own
//! shards run dry.

use std::time::Duration;

use nix::sys::signal::Signal;
use orders_testkit::{proxy::TcpProxy, sequence::Sequences};
use tokio::time::Instant;

use crate::helpers::{World, assert_complete_and_ordered, read_until, wait_readiness};

/// Two relays share the shards; a backlog builds up while the broker is away, and one
/// relay is killed. The survivor takes its shards at its next rebalance, and must drain
/// them while its own shards still have rows: after a broker outage, say, the dead
/// relay's orders would otherwise wait for the whole backlog.
///
/// Independent of the relays' relative speed: nothing is published before the
/// take-over (the broker is cut off from both relays from before the backlog is written
/// until the survivor owns every shard, and the survivor is stuck in a batch of its own
/// shards meanwhile), so both halves of the backlog are whole when the survivor starts
/// on them, and the check is on the order of events: when the first row of a
/// taken-over shard is cleared, rows of the survivor's own shards are still there.
#[tokio::test]
async fn a_survivor_drains_a_killed_relays_shards_while_its_own_still_have_rows() {
    let world = World::new().await;
    let broker = orders_testkit::kafka::bootstrap_servers().parse().expect("a host:port bootstrap address");
    let proxy = TcpProxy::kafka(broker).await;
    let mut env = world.env();
    env.retain(|(k, _)| k != "KAFKA_BOOTSTRAP_SERVERS");
    env.push(("KAFKA_BOOTSTRAP_SERVERS".into(), proxy.addr().to_string()));
    env.push(("BATCH_SIZE".into(), "50".into()));
    let mut survivor = world.start_relay(&env).await;
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
    proxy.cut();
    let (orders, versions) = (300, 200);
    world.prefill(orders, versions).await; // 60,000 rows, spread over every shard
    // The survivor is inside a run over its own shards, a batch of them waiting for the
    // broker (it reports the stall), when the other relay dies: the shards it takes over
    // must not wait until its own run dry.
    let failing = wait_readiness(&mut survivor, 503, Duration::from_secs(60)).await;
    assert!(failing.iter().any(|p| p == "kafka"), "{failing:?}");
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
    let (at_takeover, own_at_takeover) = (world.rows_in(&dead).await, world.rows_in(&own).await);
    assert_eq!(
        at_takeover + own_at_takeover,
        i64::try_from(orders as u64 * versions).expect("fits"),
        "nothing is published while the broker is cut off"
    );
    assert!(at_takeover > 0 && own_at_takeover > 0, "both halves have a backlog");
    proxy.restore().await;

    // The dead relay's shards are counted first: the survivor's own rows, counted after,
    // can only be fewer than at the moment a taken-over row was first cleared.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let dead_left = world.rows_in(&dead).await;
        let own_left = world.rows_in(&own).await;
        if dead_left < at_takeover {
            assert!(
                own_left > 0,
                "the survivor drained its own {own_at_takeover} rows before the first of the {at_takeover} \
                 rows of the shards it took over"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no row of the taken-over shards is published");
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
