//! A test world: a fresh database with the event store's schema, a fresh topic, relays
//! started in-process, a writer appending events with outbox rows, and a reader that
//! checks per-key order.

use std::{collections::BTreeMap, time::Duration};

use futures::StreamExt;
use orders_eventstore::{Append, EventStore, NewEvent, Options, OutboxMessage};
use orders_outbox::{Relay, RelayOptions, RelayStatus};
use orders_testkit::{kafka::TestKafka, postgres::TestDatabase, sequence::Sequences};
use rdkafka::{
    ClientConfig, Message,
    consumer::StreamConsumer,
    message::{Headers, OwnedMessage},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub(crate) const CHANNEL: &str = "outbox";
pub(crate) const PARTITIONS: i32 = 6;

pub(crate) struct World {
    pub(crate) db: TestDatabase,
    pub(crate) kafka: TestKafka,
    pub(crate) topic: String,
    pub(crate) store: EventStore,
}

impl World {
    pub(crate) async fn new() -> Self {
        init_logs();
        let db = TestDatabase::create().await;
        let store = EventStore::new(
            db.pool().clone(),
            Options { notify_channel: Some(CHANNEL.into()), ..Options::default() },
        );
        store.migrate().await.expect("migrate");
        let mut kafka = TestKafka::new().await;
        let topic = kafka.topic("orders", PARTITIONS).await;
        Self { db, kafka, topic, store }
    }

    /// Options for a quick test: short intervals.
    pub(crate) fn options() -> RelayOptions {
        RelayOptions {
            poll_interval: Duration::from_millis(500),
            rebalance_interval: Duration::from_millis(200),
            drain_timeout: Duration::from_secs(2),
            stall_threshold: Duration::from_secs(1),
            backlog_interval: Duration::from_millis(500),
            ..RelayOptions::default()
        }
    }

    /// A relay on this world's database, producing to `bootstrap`.
    pub(crate) fn relay_via(&self, bootstrap: &str, options: RelayOptions) -> Relay {
        let pool = orders_testkit::postgres::pool(self.db.url(), 4);
        let session: tokio_postgres::Config = self.db.url().parse().expect("url");
        let mut producer = ClientConfig::new();
        producer.set("bootstrap.servers", bootstrap);
        Relay::new(pool, session, &producer, options).expect("relay")
    }

    pub(crate) fn relay(&self, options: RelayOptions) -> Relay {
        self.relay_via(&orders_testkit::kafka::bootstrap_servers(), options)
    }

    /// Appends version `version` of `order` (one event, one outbox row).
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
                ("traceparent".into(), format!("00-{}-{:016x}-01", order.simple(), version)),
                ("event-type".into(), "OrderTouched".into()),
            ]),
        };
        self.store
            .append(Append {
                stream_id: order,
                expected_version: version - 1,
                events: &[event],
                outbox: &[message],
                snapshot: None,
                idempotency: None,
            })
            .await
            .expect("append");
    }

    /// Appends versions 1..=versions of `orders` orders, `concurrency` orders at a time.
    pub(crate) async fn write(&self, orders: &[Uuid], versions: u64, concurrency: usize) {
        futures::stream::iter(orders.iter().copied())
            .for_each_concurrent(concurrency, |order| async move {
                for version in 1..=versions {
                    self.append(order, version).await;
                }
            })
            .await;
    }

    pub(crate) async fn outbox_rows(&self) -> i64 {
        let client = self.db.pool().get().await.expect("connection");
        client.query_one("SELECT count(*) FROM outbox", &[]).await.expect("count").get(0)
    }

    pub(crate) fn reader(&self) -> StreamConsumer {
        self.kafka.consumer_from_start(&self.topic, PARTITIONS)
    }
}

/// A relay running on a task of its own.
pub(crate) struct Running {
    pub(crate) token: CancellationToken,
    pub(crate) status: RelayStatus,
    handle: tokio::task::JoinHandle<orders_outbox::Result<()>>,
}

impl Running {
    pub(crate) fn start(relay: Relay) -> Self {
        let token = CancellationToken::new();
        let status = relay.status();
        let handle = tokio::spawn(relay.run(token.clone()));
        Self { token, status, handle }
    }

    /// Cancels it and waits for its drain, which must end within `within`.
    pub(crate) async fn stop(self, within: Duration) {
        self.token.cancel();
        tokio::time::timeout(within, self.handle)
            .await
            .expect("the relay drains in time")
            .expect("the relay task does not panic")
            .expect("the relay ends cleanly");
    }

    /// Waits until it owns `n` shards.
    pub(crate) async fn wait_for_shards(&self, n: usize, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.status.owned_shards().len() != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "owns {} shards, not {n}",
                self.status.owned_shards().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Reads `reader` until `expected` distinct versions arrived in order (or `within`
/// passes); returns what it saw and the messages.
pub(crate) async fn read_until(
    reader: &StreamConsumer,
    expected: u64,
    within: Duration,
) -> (Sequences, Vec<OwnedMessage>) {
    let mut seen = Sequences::default();
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while seen.distinct() < expected {
        let message = match tokio::time::timeout_at(deadline, reader.recv()).await {
            Ok(message) => message.expect("consume"),
            Err(_) => break,
        };
        let version: u64 = std::str::from_utf8(message.payload().expect("payload"))
            .expect("utf-8")
            .parse()
            .expect("a version");
        seen.observe(message.key().expect("key"), version);
        messages.push(message.detach());
    }
    (seen, messages)
}

/// The value of header `name` of `message`.
pub(crate) fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// Option tweaks for particular tests.
pub(crate) trait RelayOptionsExt {
    /// Polling so rare that only a notification can wake the relay in a test's time.
    fn no_polling(self) -> Self;
}

impl RelayOptionsExt for RelayOptions {
    fn no_polling(self) -> Self {
        RelayOptions { poll_interval: Duration::from_secs(3600), ..self }
    }
}

/// Logs to the test's output when `TEST_LOG` is set (quiet otherwise).
fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("TEST_LOG").unwrap_or_default())
            .with_test_writer()
            .try_init();
    }
}
