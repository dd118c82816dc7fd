//! `make bench`: key-ordered parallelism, measured against the local Kafka and
//! PostgreSQL (`make up`).
//!
//! One topic of **one partition** holds `BENCH_PARALLEL_EVENTS` (10,000) records over
//! `BENCH_PARALLEL_KEYS` (1,000) keys, each key's records numbered 1, 2, … in order.
//! The handler waits 5 ms (`BENCH_HANDLER_MS`), as a call to a remote service would,
//! and checks that each key's records come in order. The same consumer reads the topic
//! with concurrency 64 and with concurrency 1; concurrency 1 is what a consumer that
//! handles a partition's records one after the other (the seed's consumer, and most
//! Kafka consumers) can do. Each run is a fresh consumer group from the start of the
//! topic, timed from its first handled record to its last (the group join before
//! that is the same for both and not the subject). Concurrency 64 runs
//! `BENCH_ROUNDS` (3) times, concurrency 1 once (it takes a minute); the report gives
//! the median and the spread. A markdown table is printed and appended to
//! `$BENCH_REPORT` when set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::join_all;
use orders_consumer::{Consumer, Failure, Handler, Record, Settings, Store};
use orders_testkit::{
    bench::{env_or, median, report, spread},
    kafka::TestKafka,
    postgres::TestDatabase,
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

/// Waits, then records when and in which order it handled what.
struct Remote {
    wait: Duration,
    handled: AtomicUsize,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
    /// Per key, the last number handled.
    seen: Mutex<HashMap<String, u32>>,
    out_of_order: AtomicUsize,
}

impl Remote {
    fn new(wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            wait,
            handled: AtomicUsize::new(0),
            first: Mutex::new(None),
            last: Mutex::new(None),
            seen: Mutex::new(HashMap::new()),
            out_of_order: AtomicUsize::new(0),
        })
    }
}

impl Handler for Remote {
    async fn handle(&self, record: &Record) -> Result<(), Failure> {
        self.first.lock().unwrap().get_or_insert_with(Instant::now);
        tokio::time::sleep(self.wait).await;
        let number: u32 = std::str::from_utf8(record.payload.as_deref().unwrap_or_default())
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| Failure::permanent("not a number"))?;
        let previous = self.seen.lock().unwrap().insert(record.key_text(), number);
        if previous.unwrap_or(0) + 1 != number {
            self.out_of_order.fetch_add(1, Ordering::SeqCst);
        }
        *self.last.lock().unwrap() = Some(Instant::now());
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct Measured {
    rate: f64,
    out_of_order: usize,
}

struct Bench {
    kafka: TestKafka,
    db: TestDatabase,
    topic: String,
    dlq: String,
}

async fn run(bench: &Bench, concurrency: usize, events: usize) -> Measured {
    let Bench { kafka, db, topic, dlq } = bench;
    let wait = Duration::from_millis(env_or("BENCH_HANDLER_MS", 5));
    let name = kafka.name(&format!("bench-c{concurrency}-{}", orders_testkit::unique_suffix()));
    let store = Store::new(db.pool().clone(), name.clone());
    store.migrate().await.expect("migrate the consumer's tables");
    let settings = Settings { concurrency, ..Settings::new(&name, &[topic], kafka.client_config(), dlq) };
    let remote = Remote::new(wait);
    let consumer = Consumer::new(settings, store, Arc::clone(&remote)).expect("consumer");
    let token = CancellationToken::new();
    let running = tokio::spawn(consumer.run(token.clone()));
    // Generous: concurrency 1 needs events × wait, and more on a loaded machine.
    let deadline = Instant::now() + wait * u32::try_from(events).unwrap() * 4 + Duration::from_secs(120);
    while remote.handled.load(Ordering::SeqCst) < events {
        assert!(Instant::now() < deadline, "concurrency {concurrency}: not every record handled in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    token.cancel();
    running.await.expect("joined").expect("the consumer stops cleanly");
    let first = remote.first.lock().unwrap().expect("a first record");
    let last = remote.last.lock().unwrap().expect("a last record");
    Measured {
        rate: events as f64 / last.duration_since(first).as_secs_f64(),
        out_of_order: remote.out_of_order.load(Ordering::SeqCst),
    }
}

#[tokio::main]
async fn main() {
    let events: usize = env_or("BENCH_PARALLEL_EVENTS", 10_000);
    let keys: usize = env_or("BENCH_PARALLEL_KEYS", 1_000);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let handler_ms: u64 = env_or("BENCH_HANDLER_MS", 5);
    let db = TestDatabase::create().await;
    let mut kafka = TestKafka::new().await;
    let topic = kafka.topic("bench-parallel", 1).await;
    let dlq = kafka.topic("bench-dlq", 1).await;
    let producer: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let records: Vec<(String, String)> =
        (0..events).map(|i| (format!("key-{}", i % keys), (i / keys + 1).to_string())).collect();
    let sends = records.iter().map(|(key, number)| {
        producer.send(FutureRecord::to(&topic).key(key).payload(number), Duration::from_secs(30))
    });
    for sent in join_all(sends).await {
        sent.map_err(|(e, _)| e).expect("produce");
    }
    eprintln!("produced {events} records over {keys} keys to {topic} (1 partition)");
    let bench = Bench { kafka, db, topic, dlq };

    let mut parallel = Vec::new();
    let mut out_of_order = 0;
    for round in 1..=rounds {
        let measured = run(&bench, 64, events).await;
        eprintln!("round {round}: concurrency 64: {:.0} records/s", measured.rate);
        out_of_order += measured.out_of_order;
        parallel.push(measured.rate);
    }
    let serial = run(&bench, 1, events).await;
    eprintln!("concurrency 1: {:.0} records/s", serial.rate);
    out_of_order += serial.out_of_order;
    assert_eq!(out_of_order, 0, "records of one key were handled out of order");

    let rate = median(&parallel);
    let spread = spread(&parallel);
    let table = format!(
        "## orders-consumer: key-ordered parallelism\n\n\
         {events} records over {keys} keys on one partition, a handler that waits {handler_ms} ms; \
         first to last handled record. Concurrency 64: median of {rounds} rounds \
         ({spread} records/s); concurrency 1: one round. Each key's records in order \
         in every run.\n\n\
         | measure | concurrency 1 | concurrency 64 | 64 / 1 |\n\
         |---|---|---|---|\n\
         | throughput, records/s | {:.0} | {rate:.0} | {:.1} |\n\n",
        serial.rate,
        rate / serial.rate,
    );
    report(&table);
}
