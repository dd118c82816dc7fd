//! `make bench`: the outbox relay beside the raw rdkafka producer, measured in the same
//! run, on the same messages, against the local Kafka and PostgreSQL (`make up`).
//!
//! 1. **Raw producer throughput**: the messages produced straight from memory with the
//!    relay's producer settings (idempotent, `acks=all`, `linger.ms=1`), in outbox
//!    order, timed until the last acknowledgement.
//! 2. **Relay throughput**: the same messages committed to the outbox in one
//!    transaction; timed from the commit (whose NOTIFY wakes the relay) until the
//!    outbox is empty, so it includes reading, producing, waiting for every
//!    acknowledgement and deleting.
//! 3. **Publish latency at a steady rate**: events appended one transaction each (as
//!    command-service does, with NOTIFY) at a fixed rate; the relay's own
//!    `outbox_publish_latency_seconds` samples give row insert to broker
//!    acknowledgement. Beside it, the raw producer's send-to-acknowledgement latency at
//!    the same rate.
//!
//! The relay runs in-process with the service's default settings (1 worker, batches of
//! 5,000). A markdown table is printed and appended to `$BENCH_REPORT` when set.
//! Throughput is measured in `BENCH_ROUNDS` (5) rounds, raw then relay in each; the
//! ratio reported is the median of the rounds' ratios (the machine's load varies).
//! Sizes can be changed with `BENCH_EVENTS` (default 100000), `BENCH_RATE` (1000) and
//! `BENCH_SECONDS` (10); the relay's settings with `BENCH_WORKERS` and `BENCH_BATCH`;
//! `BENCH_LOG` (a log filter such as `orders_outbox=debug`) shows its batches.

#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{StreamExt, stream::FuturesUnordered};
use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use orders_eventstore::{EventStore, Options, outbox_shard, test_support::TestEvent};
use orders_outbox::{Relay, RelayOptions, producer_config};
use orders_runtime::CancellationToken;
use orders_testkit::{
    bench::{env_or, median, report},
    kafka::TestKafka,
    postgres::TestDatabase,
};
use rdkafka::{
    ClientConfig,
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
    types::RDKafkaErrorCode,
};
use uuid::Uuid;

const ORDERS: usize = 1_000;
const PAYLOAD_BYTES: usize = 200;
const PARTITIONS: i32 = 12;

/// One outbox message: key (order id), payload, headers.
struct Msg {
    key: Vec<u8>,
    payload: Vec<u8>,
    headers: BTreeMap<String, String>,
}

fn messages(count: usize) -> Vec<Msg> {
    let orders: Vec<Uuid> = (0..ORDERS).map(|_| Uuid::now_v7()).collect();
    (0..count)
        .map(|i| {
            let order = orders[i % ORDERS];
            let version = i / ORDERS + 1;
            let mut payload = format!("{order}:{version}:").into_bytes();
            payload.resize(PAYLOAD_BYTES, b'x');
            Msg {
                key: order.to_string().into_bytes(),
                payload,
                headers: BTreeMap::from([
                    ("traceparent".into(), format!("00-{}-{version:016x}-01", order.simple())),
                    ("event-type".into(), "OrderPaid".into()),
                ]),
            }
        })
        .collect()
}

fn headers(msg: &Msg) -> OwnedHeaders {
    msg.headers.iter().fold(OwnedHeaders::new_with_capacity(2), |h, (k, v)| {
        h.insert(Header { key: k, value: Some(v.as_bytes()) })
    })
}

/// A producer with the relay's settings, connected and warmed up by one message on
/// `topic`, so that no measure includes the connection set-up.
async fn producer(topic: &str) -> FutureProducer {
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", orders_testkit::kafka::bootstrap_servers());
    let producer: FutureProducer = producer_config(&base).create().expect("producer");
    let record = FutureRecord::<[u8], [u8]>::to(topic).key(&b"warm-up"[..]).payload(&b"0"[..]);
    producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).expect("warm-up");
    producer
}

/// Produces every message in order and waits for all acknowledgements.
async fn raw_throughput(messages: &[Msg], topic: &str) -> Duration {
    let producer = producer(topic).await;
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    for msg in messages {
        let mut record = FutureRecord::<[u8], [u8]>::to(topic)
            .key(&msg.key[..])
            .payload(&msg.payload[..])
            .headers(headers(msg));
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    // Let acknowledgements free room, as the relay does.
                    if let Some(done) = pending.next().await {
                        done.expect("delivered").expect("acknowledged");
                    }
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
    }
    while let Some(done) = pending.next().await {
        done.expect("delivered").expect("acknowledged");
    }
    started.elapsed()
}

/// Produces one message every `1 / rate` seconds for `seconds`; returns the
/// send-to-acknowledgement latencies.
async fn raw_latency(messages: &[Msg], topic: &str, rate: f64, seconds: u64) -> Vec<f64> {
    let producer = producer(topic).await;
    let count = (rate * seconds as f64) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut pending = tokio::task::JoinSet::new();
    for msg in messages.iter().cycle().take(count) {
        tick.tick().await;
        let record = FutureRecord::<[u8], [u8]>::to(topic)
            .key(&msg.key[..])
            .payload(&msg.payload[..])
            .headers(headers(msg));
        let sent = Instant::now();
        let delivery = producer.send_result(record).map_err(|(e, _)| e).expect("enqueue");
        // A task of its own per message, so the acknowledgement is timed when it comes.
        pending.spawn(async move {
            delivery.await.expect("delivered").expect("acknowledged");
            sent.elapsed().as_secs_f64()
        });
    }
    pending.join_all().await
}

/// A metrics recorder that keeps the samples of the relay's latency histogram and
/// counts the rows it published (so that the bench can wait for them without
/// querying the database while the relay works).
#[derive(Default)]
struct LatencySamples(Mutex<Vec<f64>>);

#[derive(Default)]
struct Published(AtomicU64);

impl CounterFn for Published {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

impl HistogramFn for LatencySamples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

struct BenchRecorder(Arc<LatencySamples>, Arc<Published>);

impl Recorder for BenchRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if key.name() == orders_outbox::metric::PUBLISHED {
            Counter::from_arc(Arc::clone(&self.1))
        } else {
            Counter::noop()
        }
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        if key.name() == orders_outbox::metric::PUBLISH_LATENCY {
            Histogram::from_arc(Arc::clone(&self.0))
        } else {
            Histogram::noop()
        }
    }
}

fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(f64::total_cmp);
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples.get(index).copied().unwrap_or(f64::NAN)
}

async fn outbox_rows(db: &TestDatabase) -> i64 {
    let client = db.pool().get().await.unwrap();
    client.query_one("SELECT count(*) FROM outbox", &[]).await.unwrap().get(0)
}

/// Commits every message to the outbox in one transaction (with a NOTIFY) and returns
/// the instant the commit returned.
async fn fill_outbox(db: &TestDatabase, messages: &[Msg], topic: &str) -> Instant {
    let mut client = db.pool().get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    for chunk in messages.chunks(10_000) {
        let shards: Vec<i32> = chunk.iter().map(|m| outbox_shard(&m.key)).collect();
        let keys: Vec<&[u8]> = chunk.iter().map(|m| m.key.as_slice()).collect();
        let payloads: Vec<&[u8]> = chunk.iter().map(|m| m.payload.as_slice()).collect();
        let headers: Vec<serde_json::Value> = chunk.iter().map(|m| serde_json::json!(m.headers)).collect();
        tx.execute(
            "INSERT INTO outbox (shard, topic, key, payload, headers)
             SELECT s, $5, k, p, h FROM unnest($1::INTEGER[], $2::BYTEA[], $3::BYTEA[], $4::JSONB[])
                 WITH ORDINALITY AS r (s, k, p, h, n)
             ORDER BY n",
            &[&shards, &keys, &payloads, &headers, &topic],
        )
        .await
        .unwrap();
    }
    tx.execute("SELECT pg_notify('outbox', '')", &[]).await.unwrap();
    tx.commit().await.unwrap();
    Instant::now()
}

/// Appends events one transaction each at `rate` per second for `seconds`, spread over
/// `orders` orders (each order's next version comes `orders / rate` seconds later).
async fn steady_load(store: &EventStore, topic: &str, rate: f64, seconds: u64, orders: usize) {
    let ids: Vec<Uuid> = (0..orders).map(|_| Uuid::now_v7()).collect();
    let count = (rate * seconds as f64) as usize;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut tasks = tokio::task::JoinSet::new();
    let mut payload = vec![b'x'; PAYLOAD_BYTES];
    payload[0] = b'{';
    for i in 0..count {
        tick.tick().await;
        let (store, topic, payload) = (store.clone(), topic.to_string(), payload.clone());
        let order = ids[i % orders];
        let version = (i / orders + 1) as u64;
        tasks.spawn(async move {
            TestEvent::new(&topic, order, version)
                .event_type("OrderPaid")
                .payload(payload)
                .append(&store)
                .await
                .expect("append");
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Waits until the relay has published `total` rows since it started, then until the
/// outbox is empty.
async fn relayed(db: &TestDatabase, published: &Published, total: u64) {
    while published.0.load(Ordering::Relaxed) < total {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    while outbox_rows(db).await > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::main]
async fn main() {
    let events: usize = env_or("BENCH_EVENTS", 100_000);
    let rounds: usize = env_or("BENCH_ROUNDS", 5);
    let rate: f64 = env_or("BENCH_RATE", 1_000.0);
    let seconds: u64 = env_or("BENCH_SECONDS", 10);
    if let Ok(filter) = std::env::var("BENCH_LOG") {
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    }
    let samples = Arc::new(LatencySamples::default());
    let published = Arc::new(Published::default());
    metrics::set_global_recorder(BenchRecorder(Arc::clone(&samples), Arc::clone(&published)))
        .expect("the only recorder");

    let db = TestDatabase::create().await;
    let store = EventStore::new(
        db.pool().clone(),
        Options { notify_channel: Some("outbox".into()), ..Options::default() },
    );
    store.migrate().await.expect("migrate");
    let mut kafka = TestKafka::new().await;
    let raw_topic = kafka.topic("bench-raw", PARTITIONS).await;
    let relay_topic = kafka.topic("bench-relay", PARTITIONS).await;
    let messages = messages(events);

    let pool = orders_testkit::postgres::pool(db.url(), 8);
    let session = db.url().parse::<orders_runtime::postgres::DatabaseUrl>().unwrap().target().unwrap();
    let mut base = ClientConfig::new();
    base.set("bootstrap.servers", orders_testkit::kafka::bootstrap_servers());
    let defaults = RelayOptions::default();
    let options = RelayOptions {
        workers: env_or("BENCH_WORKERS", defaults.workers),
        batch_size: env_or("BENCH_BATCH", defaults.batch_size),
        ..defaults
    };
    let (workers, batch) = (options.workers, options.batch_size);
    let relay = Relay::new(pool, session, &base, options).expect("relay");
    let status = relay.status();
    let token = CancellationToken::new();
    let running = tokio::spawn(relay.run(token.clone()));
    while status.owned_shards().len() < 64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Warm-up: one row through the relay, so that its producer is connected too.
    fill_outbox(&db, &messages[..1], &relay_topic).await;
    relayed(&db, &published, 1).await;

    // Rounds alternate, so that both sides see the same machine.
    let mut raw_rates = Vec::new();
    let mut relay_rates = Vec::new();
    for round in 1..=rounds {
        eprintln!("round {round}/{rounds}: raw producer, {events} messages...");
        let raw = raw_throughput(&messages, &raw_topic).await;
        raw_rates.push(events as f64 / raw.as_secs_f64());
        eprintln!("round {round}/{rounds}: relay, {events} rows from a pre-filled outbox...");
        let before = published.0.load(Ordering::Relaxed);
        let committed = fill_outbox(&db, &messages, &relay_topic).await;
        relayed(&db, &published, before + events as u64).await;
        relay_rates.push(events as f64 / committed.elapsed().as_secs_f64());
    }

    eprintln!("steady rate: {rate}/s for {seconds}s through the relay...");
    samples.0.lock().unwrap().clear();
    steady_load(&store, &relay_topic, rate, seconds, 500).await;
    while outbox_rows(&db).await > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut relay_latency = std::mem::take(&mut *samples.0.lock().unwrap());
    token.cancel();
    running.await.unwrap().unwrap();

    eprintln!("steady rate: {rate}/s for {seconds}s through the raw producer...");
    let mut raw_latency = raw_latency(&messages, &raw_topic, rate, seconds).await;

    let rounds_detail =
        |rates: &[f64]| rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(", ");
    let detail = format!("raw {}; relay {}", rounds_detail(&raw_rates), rounds_detail(&relay_rates));
    let ratios: Vec<f64> = raw_rates.iter().zip(&relay_rates).map(|(raw, relay)| relay / raw).collect();
    let ratio = median(&ratios);
    let raw_rate = median(&raw_rates);
    let relay_rate = median(&relay_rates);
    let ms = |s: f64| s * 1000.0;
    let table = format!(
        "## outbox-relay\n\n\
         {events} events of {PAYLOAD_BYTES} B (keys: {ORDERS} orders, 2 headers), topic of {PARTITIONS} partitions; \
         relay in-process, {workers} workers, batches of {batch}. Throughput: medians of {rounds} rounds, \
         raw then relay in each ({detail} events/s); the ratio is the median of the rounds' ratios.\n\n\
         | measure | raw rdkafka producer | outbox relay | relay / raw |\n\
         |---|---|---|---|\n\
         | throughput, events/s | {raw_rate:.0} | {relay_rate:.0} | {ratio:.2} |\n\
         | latency p50 at {rate:.0} events/s, ms | {:.2} | {:.2} | |\n\
         | latency p99 at {rate:.0} events/s, ms | {:.2} | {:.2} | |\n\
         | latency max at {rate:.0} events/s, ms | {:.2} | {:.2} | |\n\n\
         Raw latency: send to acknowledgement. Relay latency: outbox row insert (inside the writer's \
         transaction, just before its commit) to broker acknowledgement, {} samples.\n\n",
        ms(percentile(&mut raw_latency, 0.5)),
        ms(percentile(&mut relay_latency, 0.5)),
        ms(percentile(&mut raw_latency, 0.99)),
        ms(percentile(&mut relay_latency, 0.99)),
        ms(percentile(&mut raw_latency, 1.0)),
        ms(percentile(&mut relay_latency, 1.0)),
        relay_latency.len(),
    );
    report(&table);
}
