//! The relay binary against the real PostgreSQL and Kafka (`make up`): three replicas
//! publishing 10,000 events in order, a replica killed mid-batch, the broker and the
//! database going away under load. Each test checks with a consumer that every order's
//! versions arrive in order and none is missing; duplicates are allowed and reported.
//!
//! The broker is taken away from the relay through a Kafka-aware TCP proxy
//! ([`orders_testkit::proxy::TcpProxy::kafka`], which also points the broker addresses
//! in metadata at itself): cutting it closes the relay's connections and refuses new
//! ones, which is what a stopped broker looks like from the client, while the shared
//! broker keeps serving the tests running beside. PostgreSQL is taken away the same way
//! with a plain proxy.

mod helpers;
mod quarantine;
mod takeover;

use std::time::Duration;

use helpers::{World, assert_complete_and_ordered, metric, read_until, wait_readiness};
use nix::sys::signal::Signal;
use orders_testkit::{proxy::TcpProxy, sequence::Sequences};
use uuid::Uuid;

#[tokio::test]
async fn ten_thousand_events_reach_kafka_in_order_with_three_replicas() {
    let world = World::new().await;
    let env = world.env();
    let relays =
        [world.start_relay(&env).await, world.start_relay(&env).await, world.start_relay(&env).await];
    let reader = world.reader();
    let orders: Vec<Uuid> = (0..500).map(|_| Uuid::now_v7()).collect();

    world.write(&orders, 20, 16, None).await;
    let mut seen = Sequences::default();
    read_until(&reader, &mut seen, 10_000, Duration::from_secs(180)).await;
    let duplicates = assert_complete_and_ordered(&seen, 10_000, 500);
    world.wait_drained(Duration::from_secs(60)).await;

    let mut published = Vec::new();
    for relay in &relays {
        published.push(metric(relay, "outbox_published_total").await.unwrap_or(0.0));
        let (_, body) = relay.get("/metrics").await.expect("metrics");
        for name in
            ["outbox_backlog_rows", "outbox_backlog_oldest_age_seconds", "outbox_publish_latency_seconds"]
        {
            assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
        }
    }
    eprintln!("published per replica: {published:?}; duplicates: {duplicates}");
    assert!(published.iter().all(|p| *p > 0.0), "every replica takes a share: {published:?}");
    assert_eq!(published.iter().sum::<f64>() as usize, 10_000 + duplicates);
}

#[tokio::test]
async fn a_relay_killed_mid_batch_and_restarted_loses_nothing() {
    let world = World::new().await;
    let total_orders = 200;
    world.prefill(total_orders, 100).await; // 20,000 rows
    let mut env = world.env();
    env.push(("BATCH_SIZE".into(), "250".into()));
    let relay = world.start_relay(&env).await;

    // Kill while the backlog is being drained: the relay is inside a batch all along.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while world.outbox_rows().await > 15_000 {
        assert!(tokio::time::Instant::now() < deadline, "the relay does not drain");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relay.signal(Signal::SIGKILL);
    let mut relay = relay;
    relay.wait_exit(Duration::from_secs(30)).await;
    let left = world.outbox_rows().await;
    assert!(left > 0, "killed before the end of the backlog");

    let _restarted = world.start_relay(&env).await;
    let reader = world.reader();
    let mut seen = Sequences::default();
    read_until(&reader, &mut seen, 20_000, Duration::from_secs(180)).await;
    let duplicates = assert_complete_and_ordered(&seen, 20_000, total_orders);
    world.wait_drained(Duration::from_secs(60)).await;
    eprintln!("killed with {left} rows left; duplicates on the topic: {duplicates}");
}

#[tokio::test]
async fn the_broker_stopped_and_restarted_under_load_loses_nothing() {
    let world = World::new().await;
    let broker = orders_testkit::kafka::bootstrap_servers().parse().expect("a host:port bootstrap address");
    let proxy = TcpProxy::kafka(broker).await;
    let mut env = world.env();
    env.retain(|(k, _)| k != "KAFKA_BOOTSTRAP_SERVERS");
    env.push(("KAFKA_BOOTSTRAP_SERVERS".into(), proxy.addr().to_string()));
    let mut relay = world.start_relay(&env).await;
    let reader = world.reader();
    let orders: Vec<Uuid> = (0..100).map(|_| Uuid::now_v7()).collect();

    // 3,000 events at about 400/s (7.5 s); the broker is away from 1.5 s to about 6.5 s.
    let writing = world.write(&orders, 30, 16, Some(400.0));
    let outage = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut before = Sequences::default();
        read_until(&world.reader(), &mut before, 1, Duration::from_secs(60)).await;
        assert_eq!(before.distinct(), 1, "events flow before the outage");
        eprintln!("before the outage: {} rows in the outbox", world.outbox_rows().await);
        proxy.cut();
        let failing = wait_readiness(&mut relay, 503, Duration::from_secs(60)).await;
        assert!(failing.iter().any(|p| p == "kafka"), "{failing:?}");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let backlog = world.outbox_rows().await;
        proxy.restore().await;
        wait_readiness(&mut relay, 200, Duration::from_secs(60)).await;
        backlog
    };
    let ((), backlog) = tokio::join!(writing, outage);
    assert!(backlog > 0, "rows wait in the outbox while the broker is away");

    let mut seen = Sequences::default();
    read_until(&reader, &mut seen, 3_000, Duration::from_secs(120)).await;
    let duplicates = assert_complete_and_ordered(&seen, 3_000, 100);
    world.wait_drained(Duration::from_secs(60)).await;
    eprintln!("backlog during the outage: {backlog}; duplicates: {duplicates}");
}

#[tokio::test]
async fn postgres_down_and_back_under_load_loses_nothing() {
    let world = World::new().await;
    let database = orders_testkit::postgres::admin_url();
    let upstream = host_port(&database);
    let proxy = TcpProxy::start(upstream).await;
    let proxied = world.db.url().replace(&upstream.to_string(), &proxy.addr().to_string());
    assert_ne!(proxied, world.db.url(), "the database URL names {upstream}");
    let mut env = world.env();
    env.retain(|(k, _)| k != "DATABASE_URL");
    env.push(("DATABASE_URL".into(), proxied));
    let mut relay = world.start_relay(&env).await;
    let reader = world.reader();
    let orders: Vec<Uuid> = (0..100).map(|_| Uuid::now_v7()).collect();

    let writing = world.write(&orders, 30, 16, Some(400.0));
    let outage = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        proxy.cut();
        let failing = wait_readiness(&mut relay, 503, Duration::from_secs(60)).await;
        assert!(failing.iter().any(|p| p == "postgres"), "{failing:?}");
        tokio::time::sleep(Duration::from_secs(3)).await;
        let backlog = world.outbox_rows().await;
        proxy.restore().await;
        wait_readiness(&mut relay, 200, Duration::from_secs(60)).await;
        backlog
    };
    let ((), backlog) = tokio::join!(writing, outage);
    assert!(backlog > 0, "rows wait in the outbox while the relay cannot reach the database");

    let mut seen = Sequences::default();
    read_until(&reader, &mut seen, 3_000, Duration::from_secs(120)).await;
    let duplicates = assert_complete_and_ordered(&seen, 3_000, 100);
    world.wait_drained(Duration::from_secs(60)).await;
    let errors = metric(&relay, "outbox_errors_total").await.unwrap_or(0.0);
    eprintln!("backlog during the outage: {backlog}; duplicates: {duplicates}; errors counted: {errors}");
}

/// The `host:port` of a `postgres://` URL, as a socket address.
fn host_port(url: &str) -> std::net::SocketAddr {
    let config: tokio_postgres::Config = url.parse().expect("a PostgreSQL URL");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        other => panic!("the test database must be reached over TCP, not {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let host = if host == "localhost" { "127.0.0.1".to_string() } else { host };
    format!("{host}:{port}").parse().expect("an IP address")
}
