//! The world of a relay test: a fresh database with the event store's schema, a fresh
//! `orders` topic, relay binaries as child processes, writers that fill the outbox the
//! way command-service does, and a reader that checks per-order order.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use backon::{BackoffBuilder as _, ExponentialBuilder};
use futures::StreamExt;
use orders_eventstore::{EventStore, Options, outbox_shard, test_support::TestEvent};
use orders_testkit::{
    kafka::TestKafka, postgres::TestDatabase, process::ServiceProcess, sequence::Sequences,
};
use rdkafka::{Message, consumer::StreamConsumer};
use tokio::time::Instant;
use uuid::Uuid;

pub(crate) const EXE: &str = env!("CARGO_BIN_EXE_outbox-relay");
pub(crate) const PARTITIONS: i32 = 6;

pub(crate) struct World {
    pub(crate) db: TestDatabase,
    pub(crate) topic: String,
    pub(crate) store: EventStore,
    kafka: TestKafka,
}

impl World {
    pub(crate) async fn new() -> Self {
        let db = TestDatabase::create().await;
        let store = EventStore::new(
            db.pool().clone(),
            Options { notify_channel: Some("outbox".into()), ..Options::default() },
        );
        store.migrate().await.expect("migrate");
        let mut kafka = TestKafka::new().await;
        let topic = kafka.topic("orders", PARTITIONS).await;
        Self { db, topic, store, kafka }
    }

    /// The relay's environment: this world's database and topic, short intervals.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        [
            ("DATABASE_URL", self.db.url().to_string()),
            ("KAFKA_BOOTSTRAP_SERVERS", orders_testkit::kafka::bootstrap_servers()),
            ("ORDERS_TOPIC", self.topic.clone()),
            ("POLL_INTERVAL", "500ms".into()),
            ("REBALANCE_INTERVAL", "200ms".into()),
            ("STALL_THRESHOLD", "1s".into()),
            ("DRAIN_TIMEOUT", "2s".into()),
            ("RETRY_BACKOFF_MAX", "1s".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Starts a relay with `env` and waits until it is ready.
    pub(crate) async fn start_relay(&self, env: &[(String, String)]) -> ServiceProcess {
        let mut relay = ServiceProcess::start(EXE, "ADMIN_ADDR", env);
        relay.wait_for("/readyz", 200, Duration::from_secs(60)).await;
        relay
    }

    /// Appends version `version` of `order`: one event and its outbox row, in one
    /// transaction with a NOTIFY, as command-service does.
    pub(crate) async fn append(&self, order: Uuid, version: u64) {
        self.append_event(TestEvent::new(&self.topic, order, version)).await;
    }

    /// Appends `event`. The database may be briefly unreachable in fault tests: a
    /// writer retries transient failures, with backoff, for about a minute.
    pub(crate) async fn append_event(&self, event: TestEvent) {
        let mut backoff = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(1))
            .with_jitter()
            .with_total_delay(Some(Duration::from_secs(60)))
            .without_max_times()
            .build();
        loop {
            match event.append(&self.store).await {
                Ok(()) => return,
                Err(e) if e.is_transient() => match backoff.next() {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => panic!("append {} v{}: {e}", event.order, event.version),
                },
                Err(e) => panic!("append {} v{}: {e}", event.order, event.version),
            }
        }
    }

    /// Version `version` of `order` with a 200,000-byte payload: more than a producer
    /// with `message.max.bytes=100000` takes, less than the broker does.
    pub(crate) fn oversized(&self, order: Uuid, version: u64) -> TestEvent {
        let mut payload = version.to_string().into_bytes();
        payload.resize(200_000, b' ');
        TestEvent::new(&self.topic, order, version).payload(payload)
    }

    /// The shards each relay's lease session holds, by backend pid.
    pub(crate) async fn shard_owners(&self) -> BTreeMap<i32, BTreeSet<i32>> {
        let client = self.db.pool().get().await.expect("connection");
        let namespace = i64::from(orders_outbox::RelayOptions::default().lock_namespace);
        client
            .query(
                "SELECT pid, array_agg(objid::BIGINT::INTEGER) FROM pg_locks
                 WHERE locktype = 'advisory' AND granted AND objsubid = 2
                   AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                   AND classid::BIGINT = $1 AND objid::BIGINT < 2147483647
                 GROUP BY pid",
                &[&namespace],
            )
            .await
            .expect("pg_locks")
            .iter()
            .map(|r| (r.get(0), r.get::<_, Vec<i32>>(1).into_iter().collect()))
            .collect()
    }

    /// The rows of `shards` in the outbox.
    pub(crate) async fn rows_in(&self, shards: &BTreeSet<i32>) -> i64 {
        let client = self.db.pool().get().await.expect("connection");
        let shards: Vec<i32> = shards.iter().copied().collect();
        client
            .query_one("SELECT count(*) FROM outbox WHERE shard = ANY($1)", &[&shards])
            .await
            .expect("count")
            .get(0)
    }

    /// Appends versions `1..=versions` of every order, round by round (version 1 of
    /// all, then 2...), `concurrency` appends at a time, at about `rate` events per
    /// second (`None`: as fast as possible).
    pub(crate) async fn write(&self, orders: &[Uuid], versions: u64, concurrency: usize, rate: Option<f64>) {
        let started = Instant::now();
        let mut written = 0usize;
        for version in 1..=versions {
            futures::stream::iter(orders.iter().copied())
                .for_each_concurrent(concurrency, |order| async move { self.append(order, version).await })
                .await;
            written += orders.len();
            if let Some(rate) = rate {
                let due = started + Duration::from_secs_f64(written as f64 / rate);
                tokio::time::sleep_until(due).await;
            }
        }
    }

    /// Fills the outbox in one statement: versions `1..=versions` of `orders` orders,
    /// keys `order-<n>`, ids in version order (as commits would give them).
    pub(crate) async fn prefill(&self, orders: usize, versions: u64) {
        let mut shards = Vec::new();
        let mut keys = Vec::new();
        let mut payloads = Vec::new();
        for version in 1..=versions {
            for order in 0..orders {
                let key = format!("order-{order}").into_bytes();
                shards.push(outbox_shard(&key));
                keys.push(key);
                payloads.push(version.to_string().into_bytes());
            }
        }
        let client = self.db.pool().get().await.expect("connection");
        client
            .execute(
                "INSERT INTO outbox (shard, topic, key, payload, headers)
                 SELECT s, $4, k, p, '{\"event-type\": \"OrderTouched\"}'
                 FROM unnest($1::INTEGER[], $2::BYTEA[], $3::BYTEA[]) WITH ORDINALITY AS r (s, k, p, n)
                 ORDER BY n",
                &[&shards, &keys, &payloads, &self.topic],
            )
            .await
            .expect("prefill");
    }

    pub(crate) async fn outbox_rows(&self) -> i64 {
        let client = self.db.pool().get().await.expect("connection");
        client.query_one("SELECT count(*) FROM outbox", &[]).await.expect("count").get(0)
    }

    /// Waits until the outbox is empty.
    pub(crate) async fn wait_drained(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let rows = self.outbox_rows().await;
            if rows == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "{rows} rows still in the outbox after {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) fn reader(&self) -> StreamConsumer {
        self.kafka.consumer_from_start(&self.topic, PARTITIONS)
    }
}

/// Reads until `expected` distinct versions arrived in order, or `within` passed.
pub(crate) async fn read_until(
    reader: &StreamConsumer,
    seen: &mut Sequences,
    expected: u64,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    while seen.distinct() < expected {
        let Ok(message) = tokio::time::timeout_at(deadline, reader.recv()).await else { break };
        let message = message.expect("consume");
        let version = std::str::from_utf8(message.payload().expect("payload"))
            .ok()
            .and_then(|v| v.trim_end().parse().ok())
            .expect("a version");
        seen.observe(message.key().expect("key"), version);
    }
}

/// Asserts that `expected` versions arrived, each key's in order, and returns the
/// number of duplicates.
pub(crate) fn assert_complete_and_ordered(seen: &Sequences, expected: u64, keys: usize) -> usize {
    assert!(
        seen.out_of_order.is_empty(),
        "out of order: {:?}",
        &seen.out_of_order[..seen.out_of_order.len().min(10)]
    );
    assert_eq!(seen.distinct(), expected, "missing events");
    assert_eq!(seen.keys(), keys);
    seen.duplicates
}

/// The value of the metric sample `name` (the first line starting with it) on `relay`.
pub(crate) async fn metric(relay: &ServiceProcess, name: &str) -> Option<f64> {
    let (_, body) = relay.get("/metrics").await?;
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Runs `outbox-relay quarantine <args>` with `env`; returns the exit code and stdout
/// and stderr.
pub(crate) async fn quarantine_command(env: &[(String, String)], args: &[&str]) -> (i32, String) {
    let mut command = std::process::Command::new(EXE);
    command.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).arg("quarantine").args(args);
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let output = tokio::task::spawn_blocking(move || command.output()).await.expect("join").expect("run");
    let text =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().unwrap_or(-1), text)
}

/// Polls `/readyz` until it answers `status`; returns the names of the failing checks.
pub(crate) async fn wait_readiness(relay: &mut ServiceProcess, status: u16, within: Duration) -> Vec<String> {
    let body = relay.wait_for("/readyz", status, within).await;
    let report: serde_json::Value = serde_json::from_str(&body).expect("/readyz answers JSON");
    report["checks"]
        .as_array()
        .map(|checks| {
            checks
                .iter()
                .filter(|c| c["ok"] == false)
                .filter_map(|c| c["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
