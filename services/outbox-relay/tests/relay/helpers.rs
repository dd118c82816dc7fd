//! The world of a relay test: a fresh database with the event store's schema, a fresh
//! `orders` topic, relay binaries as child processes, writers that fill the outbox the
//! way command-service does, and a reader that checks per-order order.

use std::{collections::BTreeMap, time::Duration};

use futures::StreamExt;
use orders_eventstore::{Append, EventStore, NewEvent, Options, OutboxMessage, outbox_shard};
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
        relay.wait_for("/readyz", 200, Duration::from_secs(30)).await;
        relay
    }

    /// Appends version `version` of `order`: one event and its outbox row, in one
    /// transaction with a NOTIFY, as command-service does.
    pub(crate) async fn append(&self, order: Uuid, version: u64) {
        let event = NewEvent {
            event_id: Uuid::now_v7(),
            version,
            event_type: "OrderTouched".into(),
            payload: version.to_string().into_bytes(),
        };
        let message = OutboxMessage {
            topic: self.topic.clone(),
            key: order.to_string().into_bytes(),
            payload: version.to_string().into_bytes(),
            headers: BTreeMap::from([
                ("traceparent".into(), format!("00-{}-{version:016x}-01", order.simple())),
                ("event-type".into(), "OrderTouched".into()),
            ]),
        };
        let append = Append {
            stream_id: order,
            expected_version: version - 1,
            events: &[event],
            outbox: &[message],
            snapshot: None,
            idempotency: None,
        };
        // The database may be briefly unreachable in fault tests: a writer retries.
        for attempt in 0.. {
            match self.store.append(append).await {
                Ok(()) => return,
                Err(e) if e.is_transient() && attempt < 50 => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("append {order} v{version}: {e}"),
            }
        }
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
            .and_then(|v| v.parse().ok())
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
