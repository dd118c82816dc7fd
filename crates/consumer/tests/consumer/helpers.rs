//! A test world: a fresh database with the consumer's tables, a fresh topic and
//! dead-letter topic, a producer, and a scripted handler that logs what it handled.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use orders_consumer::{Consumer, Failure, Handler, Record, Retry, Settings, Store};
use orders_testkit::{kafka::TestKafka, postgres::TestDatabase};
use rdkafka::{
    Message,
    consumer::StreamConsumer,
    message::{Headers, OwnedMessage},
    producer::{FutureProducer, FutureRecord},
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub(crate) struct World {
    db: TestDatabase,
    pub(crate) kafka: TestKafka,
    pub(crate) topic: String,
    pub(crate) dlq: String,
    pub(crate) partitions: i32,
    pub(crate) store: Store,
    pub(crate) name: String,
    producer: FutureProducer,
}

impl World {
    pub(crate) async fn new(partitions: i32) -> Self {
        init_logs();
        let db = TestDatabase::create().await;
        let mut kafka = TestKafka::new().await;
        let topic = kafka.topic("orders", partitions).await;
        let dlq = kafka.topic("dlq", 1).await;
        let name = kafka.name("processor");
        let store = Store::new(db.pool().clone(), name.clone());
        store.migrate().await.expect("migrate");
        let producer: FutureProducer = kafka
            .client_config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        Self { db, kafka, topic, dlq, partitions, store, name, producer }
    }

    /// Settings for a quick test: short retries and commits.
    pub(crate) fn settings(&self) -> Settings {
        Settings {
            retry: Retry {
                max_attempts: 3,
                min_delay: Duration::from_millis(50),
                max_delay: Duration::from_millis(200),
            },
            commit_interval: Duration::from_millis(100),
            ..Settings::new(&self.name, &[&self.topic], self.kafka.client_config(), &self.dlq)
        }
    }

    /// Produces `payload` under `key` and waits for the acknowledgement.
    pub(crate) async fn send(&self, key: &str, payload: &[u8]) {
        self.producer
            .send(FutureRecord::to(&self.topic).key(key).payload(payload), Duration::from_secs(30))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
    }

    /// Produces versions `1..=versions` of each key, interleaved.
    pub(crate) async fn send_versions(&self, keys: &[String], versions: u32) {
        let mut sends = Vec::new();
        for version in 1..=versions {
            for key in keys {
                let payload = version.to_string();
                let record = FutureRecord::to(&self.topic).key(key.as_str()).payload(payload.as_bytes());
                sends.push(self.producer.send_result(record).expect("enqueue"));
            }
        }
        for send in sends {
            send.await.expect("delivered").unwrap_or_else(|(e, _)| panic!("produce: {e}"));
        }
    }

    /// A pool on the world's database.
    pub(crate) fn pool(&self) -> deadpool_postgres::Pool {
        self.db.pool().clone()
    }

    /// A reader of the dead-letter topic from its start.
    pub(crate) fn dead_letter_reader(&self) -> StreamConsumer {
        self.kafka.consumer_from_start(&self.dlq, 1)
    }

    pub(crate) fn start<H: Handler>(&self, settings: Settings, handler: H) -> Running {
        let token = CancellationToken::new();
        let consumer = Consumer::new(settings, self.store.clone(), handler).expect("consumer");
        let handle = tokio::spawn(consumer.run(token.clone()));
        Running { token, handle }
    }
}

pub(crate) struct Running {
    token: CancellationToken,
    handle: JoinHandle<orders_consumer::Result<()>>,
}

impl Running {
    pub(crate) async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("the consumer stops in time")
            .expect("the consumer task does not panic")
            .expect("the consumer ends cleanly");
    }
}

/// What a key's records do in the [`Scripted`] handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Script {
    /// Fail transiently this many more times, then succeed.
    FailTimes(u32),
    /// Fail transiently every time.
    AlwaysTransient,
    /// Fail as unavailable (a dependency down) this many more times, then succeed.
    UnavailableTimes(u32),
    /// Fail permanently every time.
    Permanent,
}

/// A handler that logs each handled record's key and version (its payload), sleeping
/// `sleep` in each call, and fails as the script says for a key's version 1 (a key's
/// script applies to its first version only, unless `every_version`).
#[derive(Debug, Default)]
pub(crate) struct Scripted {
    pub(crate) sleep: Duration,
    pub(crate) handled: Mutex<Vec<(String, u32)>>,
    pub(crate) calls: Mutex<HashMap<String, u32>>,
    pub(crate) script: Mutex<HashMap<String, Script>>,
    pub(crate) every_version: bool,
    current: AtomicUsize,
    pub(crate) max_concurrent: AtomicUsize,
}

impl Scripted {
    pub(crate) fn sleeping(sleep: Duration) -> Arc<Self> {
        Arc::new(Self { sleep, ..Self::default() })
    }

    pub(crate) fn set(&self, key: &str, script: Option<Script>) {
        let mut scripts = self.script.lock().unwrap_or_else(PoisonError::into_inner);
        match script {
            Some(s) => scripts.insert(key.to_string(), s),
            None => scripts.remove(key),
        };
    }

    pub(crate) fn handled(&self) -> Vec<(String, u32)> {
        self.handled.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(crate) fn versions_of(&self, key: &str) -> Vec<u32> {
        self.handled().into_iter().filter(|(k, _)| k == key).map(|(_, v)| v).collect()
    }

    pub(crate) fn calls_of(&self, key: &str) -> u32 {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).get(key).copied().unwrap_or(0)
    }
}

impl Handler for Scripted {
    async fn handle(&self, record: &Record) -> Result<(), Failure> {
        let now = self.current.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_concurrent.fetch_max(now, Ordering::SeqCst);
        if !self.sleep.is_zero() {
            tokio::time::sleep(self.sleep).await;
        }
        self.current.fetch_sub(1, Ordering::SeqCst);
        let key = record.key_text();
        let version: u32 = std::str::from_utf8(record.payload.as_deref().unwrap_or_default())
            .ok()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| Failure::permanent("the payload is not a version number"))?;
        *self.calls.lock().unwrap_or_else(PoisonError::into_inner).entry(key.clone()).or_default() += 1;
        let script = {
            let mut scripts = self.script.lock().unwrap_or_else(PoisonError::into_inner);
            match scripts.get_mut(&key) {
                Some(script) if version == 1 || self.every_version => {
                    let now = *script;
                    if let Script::FailTimes(n) | Script::UnavailableTimes(n) = script {
                        if *n <= 1 {
                            scripts.remove(&key);
                        } else {
                            *n -= 1;
                        }
                    }
                    Some(now)
                }
                _ => None,
            }
        };
        match script {
            Some(Script::FailTimes(_) | Script::AlwaysTransient) => {
                Err(Failure::transient("the service is down"))
            }
            Some(Script::UnavailableTimes(_)) => Err(Failure::unavailable("the database is down")),
            Some(Script::Permanent) => Err(Failure::permanent("the order breaks a rule")),
            None => {
                self.handled.lock().unwrap_or_else(PoisonError::into_inner).push((key, version));
                Ok(())
            }
        }
    }
}

/// A handler whose effect is a row in `effects`, written once per record with the
/// inbox in the same transaction; it sleeps `sleep` first (a remote call).
#[derive(Debug)]
pub(crate) struct Effects {
    pub(crate) pool: deadpool_postgres::Pool,
    pub(crate) consumer: String,
    pub(crate) sleep: Duration,
    pub(crate) calls: AtomicUsize,
}

impl Effects {
    pub(crate) async fn new(world: &World, sleep: Duration) -> Arc<Self> {
        let pool = world.pool();
        pool.get()
            .await
            .expect("connection")
            .batch_execute(
                "CREATE TABLE effects (seq BIGSERIAL PRIMARY KEY, key TEXT NOT NULL, version INT NOT NULL)",
            )
            .await
            .expect("effects table");
        Arc::new(Self { pool, consumer: world.name.clone(), sleep, calls: AtomicUsize::new(0) })
    }

    /// Each key's versions in the order their effects committed.
    pub(crate) async fn versions(&self) -> HashMap<String, Vec<i32>> {
        let client = self.pool.get().await.expect("connection");
        let rows = client.query("SELECT key, version FROM effects ORDER BY seq", &[]).await.expect("effects");
        let mut out: HashMap<String, Vec<i32>> = HashMap::new();
        for row in rows {
            out.entry(row.get(0)).or_default().push(row.get(1));
        }
        out
    }

    pub(crate) async fn count(&self) -> i64 {
        let client = self.pool.get().await.expect("connection");
        client.query_one("SELECT count(*) FROM effects", &[]).await.expect("count").get(0)
    }
}

impl Handler for Effects {
    async fn handle(&self, record: &Record) -> Result<(), Failure> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.sleep).await;
        let key = record.key_text();
        let version: i32 = std::str::from_utf8(record.payload.as_deref().unwrap_or_default())
            .ok()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| Failure::permanent("the payload is not a version number"))?;
        let mut client = self.pool.get().await.map_err(Failure::transient)?;
        let tx = client.transaction().await.map_err(Failure::transient)?;
        let id = format!("{key}:{version}");
        if orders_consumer::inbox::claim(&tx, &self.consumer, &id).await.map_err(Failure::transient)? {
            tx.execute("INSERT INTO effects (key, version) VALUES ($1, $2)", &[&key, &version])
                .await
                .map_err(Failure::transient)?;
        }
        tx.commit().await.map_err(Failure::transient)
    }
}

/// Waits until `condition` holds, failing with `what` after `within`.
pub(crate) async fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "{what} (after {within:?})");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `n` messages from `reader`, failing after `within`.
pub(crate) async fn read(reader: &StreamConsumer, n: usize, within: Duration) -> Vec<OwnedMessage> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while out.len() < n {
        let message = tokio::time::timeout_at(deadline, reader.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages after {within:?}", out.len()))
            .expect("receive");
        out.push(message.detach());
    }
    out
}

/// The header `name` of `message`, as text.
pub(crate) fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    message
        .headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

pub(crate) fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("order-{i:04}")).collect()
}

/// The payload of `message`, as text.
pub(crate) fn payload(message: &OwnedMessage) -> String {
    String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned()
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
