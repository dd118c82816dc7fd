//! A test world: a fresh database with the event store's schema, a fresh topic, relays
//! started in-process, a writer appending events with outbox rows, and a reader that
//! checks per-key order.

use std::time::Duration;

use futures::StreamExt;
use orders_eventstore::{EventStore, Options, test_support::TestEvent};
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
        Self::with_topic_configs(&[]).await
    }

    /// A world whose topic has the settings `configs`.
    pub(crate) async fn with_topic_configs(configs: &[(&str, &str)]) -> Self {
        init_logs();
        let db = TestDatabase::create().await;
        let store = EventStore::new(
            db.pool().clone(),
            Options { notify_channel: Some(CHANNEL.into()), ..Options::default() },
        );
        store.migrate().await.expect("migrate");
        let mut kafka = TestKafka::new().await;
        let topic = kafka.topic_with("orders", PARTITIONS, configs).await;
        Self { db, kafka, topic, store }
    }

    /// Options for a quick test: short intervals, quarantine after 3 attempts.
    pub(crate) fn options() -> RelayOptions {
        RelayOptions {
            quarantine_after: 3,
            retry_backoff_max: Duration::from_secs(1),
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
        self.relay_configured(bootstrap, &[], options)
    }

    /// A relay on this world's database, producing to `bootstrap` with the extra
    /// producer settings `producer`.
    pub(crate) fn relay_configured(
        &self,
        bootstrap: &str,
        producer: &[(&str, &str)],
        options: RelayOptions,
    ) -> Relay {
        let pool = orders_testkit::postgres::pool(self.db.url(), 4);
        let session =
            self.db.url().parse::<orders_postgres::DatabaseUrl>().expect("url").target().expect("target");
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", bootstrap);
        for (k, v) in producer {
            config.set(*k, *v);
        }
        Relay::new(pool, session, &config, options).expect("relay")
    }

    /// A relay whose producer refuses records larger than 100,000 bytes at once (its
    /// `message.max.bytes`), which the broker would take: [`World::oversized`] makes
    /// rows this relay can never publish and a default one can.
    pub(crate) fn strict_relay(&self, options: RelayOptions) -> Relay {
        self.relay_configured(
            &orders_testkit::kafka::bootstrap_servers(),
            &[("message.max.bytes", "100000")],
            options,
        )
    }

    /// Version `version` of `order` with a 200,000-byte payload (too large for
    /// [`World::strict_relay`]).
    pub(crate) fn oversized(&self, order: Uuid, version: u64) -> TestEvent {
        let mut payload = version.to_string().into_bytes();
        payload.resize(200_000, b' ');
        TestEvent::new(&self.topic, order, version).payload(payload)
    }

    /// The quarantined rows: (id, key, attempts, reason), in id order.
    pub(crate) async fn quarantined(&self) -> Vec<(i64, String, i32, String)> {
        let client = self.db.pool().get().await.expect("connection");
        client
            .query("SELECT id, key, attempts, reason FROM outbox_quarantine ORDER BY id", &[])
            .await
            .expect("quarantine")
            .iter()
            .map(|r| (r.get(0), String::from_utf8_lossy(r.get(1)).into_owned(), r.get(2), r.get(3)))
            .collect()
    }

    /// The rows of `order` still in the outbox.
    pub(crate) async fn rows_of(&self, order: Uuid) -> i64 {
        let client = self.db.pool().get().await.expect("connection");
        client
            .query_one("SELECT count(*) FROM outbox WHERE key = $1", &[&order.to_string().into_bytes()])
            .await
            .expect("count")
            .get(0)
    }

    pub(crate) fn relay(&self, options: RelayOptions) -> Relay {
        self.relay_via(&orders_testkit::kafka::bootstrap_servers(), options)
    }

    /// Appends version `version` of `order` (one event, one outbox row; the payload is
    /// the version).
    pub(crate) async fn append(&self, order: Uuid, version: u64) {
        self.append_event(TestEvent::new(&self.topic, order, version)).await;
    }

    /// Appends `event` (one event, one outbox row).
    pub(crate) async fn append_event(&self, event: TestEvent) {
        event.append(&self.store).await.expect("append");
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

    /// Waits until the outbox is empty.
    pub(crate) async fn wait_drained(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let rows = self.outbox_rows().await;
            if rows == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{rows} rows still in the outbox after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

    /// Waits until its lease session is up.
    pub(crate) async fn wait_connected(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while !self.status.is_connected() {
            assert!(tokio::time::Instant::now() < deadline, "the lease session is not up after {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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

/// Reads `reader` until `expected` distinct versions arrived (or `within` passes);
/// returns what it saw and the messages.
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
        let message = message.detach();
        seen.observe(message.key().expect("key"), version_of(&message));
        messages.push(message);
    }
    (seen, messages)
}

/// The version a test message carries (its payload, the version in decimal, maybe
/// padded with spaces).
pub(crate) fn version_of(message: &OwnedMessage) -> u64 {
    std::str::from_utf8(message.payload().expect("payload"))
        .expect("utf-8")
        .trim_end()
        .parse()
        .expect("a version")
}

/// The versions of `order` among `messages`, in the order they arrived.
pub(crate) fn versions_of(messages: &[OwnedMessage], order: Uuid) -> Vec<u64> {
    let key = order.to_string().into_bytes();
    messages.iter().filter(|m| m.key() == Some(key.as_slice())).map(version_of).collect()
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
