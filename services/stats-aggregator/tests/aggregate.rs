//! The aggregator in-process against the real Kafka of `make up`: a generated stream of
//! order events (out-of-order timestamps, duplicated records) gives, read from
//! `order-stats` with `read_committed`, exactly the per-window values computed here
//! independently; no value ever goes past them (a count applied twice would).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use chrono::{DateTime, TimeZone as _, Utc};
use clap::Parser as _;
use orders_domain::{
    CancelReason, Currency, LineItem, OrderEvent, OrderEventPayload, OrderId, PaymentId, Sku, UserId,
};
use orders_events::{EventMetadata, decode_stats, encode_event};
use orders_runtime::{Runtime, lifecycle::Outcome};
use orders_testkit::kafka::TestKafka;
use rdkafka::{
    Message as _,
    producer::{FutureProducer, FutureRecord},
};
use stats_aggregator::{Config, INTERNAL_TOPICS, SERVICE, build};
use uuid::Uuid;

const PARTITIONS: i32 = 4;
const USERS: usize = 500;
const ORDERS: usize = 10_000;
const WINDOW_MS: i64 = 60_000;

/// (user, window start ms, currency) → (orders, paid, revenue, cancelled, refunded).
type Expected = BTreeMap<(String, i64, String), (u64, u64, i64, u64, i64)>;

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).unwrap()
}

/// A small deterministic generator (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The events (key, payload) in the order they are produced, and the expected windows.
fn stream() -> (Vec<(String, Vec<u8>)>, Expected) {
    let base = Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap().timestamp_millis();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut expected = Expected::new();
    let mut records = Vec::new();
    let mut duplicates = Vec::new();
    for i in 0..ORDERS {
        let order = OrderId::from_uuid(Uuid::now_v7());
        let user = format!("user-{:03}", rng.below(USERS as u64));
        let currency = if rng.below(10) == 0 { "USD" } else { "EUR" };
        let total = 100 + i64::try_from(rng.below(10_000)).unwrap();
        // Event time: rising with the order, jittered by up to 20 s either way, so
        // the stream is out of order.
        let created_at =
            base + i64::try_from(i).unwrap() * 25 + i64::try_from(rng.below(40_000)).unwrap() - 20_000;
        let window = |ms: i64| (user.clone(), ms.div_euclid(WINDOW_MS) * WINDOW_MS, currency.to_string());
        let mut events = vec![(
            created_at,
            OrderEventPayload::Created {
                user_id: UserId::new(user.as_str()).unwrap(),
                currency: Currency::new(currency).unwrap(),
                items: vec![LineItem::new(Sku::new("SKU-1").unwrap(), 1, total)],
                total_minor: total,
            },
        )];
        expected.entry(window(created_at)).or_default().0 += 1;
        let roll = rng.below(100);
        let mut paid = false;
        if roll < 70 {
            let paid_at = created_at + i64::try_from(rng.below(30_000)).unwrap();
            events.push((
                paid_at,
                OrderEventPayload::Paid {
                    payment_id: PaymentId::new(format!("pay-{i}")).unwrap(),
                    amount_minor: total,
                    currency: Currency::new(currency).unwrap(),
                },
            ));
            let entry = expected.entry(window(paid_at)).or_default();
            entry.1 += 1;
            entry.2 += total;
            paid = true;
        }
        if roll < 15 || (70..85).contains(&roll) {
            let cancelled_at = events.last().unwrap().0 + i64::try_from(rng.below(30_000)).unwrap();
            events.push((
                cancelled_at,
                OrderEventPayload::Cancelled { reason: CancelReason::new("no").unwrap() },
            ));
            let entry = expected.entry(window(cancelled_at)).or_default();
            entry.3 += 1;
            entry.4 += if paid { total } else { 0 };
        }
        for (version, (ms, payload)) in events.into_iter().enumerate() {
            let event =
                OrderEvent { order_id: order, version: version as u64 + 1, occurred_at: at(ms), payload };
            let record = (order.to_string(), encode_event(&EventMetadata::new(Uuid::now_v7(), None), &event));
            // One event in 20 is sent again later (the relay's redelivery, by hand).
            if rng.below(20) == 0 {
                duplicates.push(record.clone());
            }
            records.push(record);
        }
        if i % 500 == 499 {
            records.append(&mut duplicates);
        }
    }
    records.append(&mut duplicates);
    (records, expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_duplicates_gives_exactly_the_expected_windows() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
    }
    let mut kafka = TestKafka::new().await;
    let orders = kafka.topic("orders", PARTITIONS).await;
    let stats = kafka.topic("order-stats", PARTITIONS).await;
    let dlq = kafka.topic("dlq", 1).await;
    let app = kafka.name("stats");
    for suffix in INTERNAL_TOPICS {
        kafka.topic_named(&format!("{app}-{suffix}"), PARTITIONS).await;
    }
    let (records, expected) = stream();
    assert!(records.len() > 20_000, "{} events", records.len());
    let producer: FutureProducer =
        kafka.client_config().set("enable.idempotence", "true").set("linger.ms", "5").create().unwrap();
    let sends = records.iter().map(|(key, payload)| {
        producer.send(FutureRecord::to(&orders).key(key).payload(payload), Duration::from_secs(30))
    });
    for sent in futures::future::join_all(sends).await {
        sent.map_err(|(e, _)| e).unwrap();
    }

    let config = Config::try_parse_from([
        SERVICE,
        "--admin-addr=127.0.0.1:0",
        &format!("--kafka-bootstrap-servers={}", orders_testkit::kafka::bootstrap_servers()),
        &format!("--orders-topic={orders}"),
        &format!("--stats-topic={stats}"),
        &format!("--dead-letter-topic={dlq}"),
        &format!("--application-id={app}"),
        "--window-size=1m",
        // Longer than the stream spans in event time: no window closes, none is late
        // (which events are late would depend on how fast each partition goes).
        "--window-grace=1h",
        "--emit-interval=200ms",
    ])
    .unwrap();
    let mut runtime = Runtime::new(SERVICE, &config.runtime);
    let addr = build(config, &mut runtime).await.unwrap();
    let shutdown = runtime.shutdown_token();
    let stopped = tokio::spawn(runtime.run_until(std::future::pending()));
    orders_testkit::process::wait_until_ready(addr, Duration::from_secs(60), SERVICE).await;

    let reader = kafka.consumer_from_start(&stats, PARTITIONS);
    let mut latest: Expected = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while latest != expected {
        assert!(
            Instant::now() < deadline,
            "{} of {} windows as expected",
            expected.iter().filter(|(k, v)| latest.get(*k) == Some(v)).count(),
            expected.len()
        );
        let Ok(message) = tokio::time::timeout(Duration::from_secs(5), reader.recv()).await else { continue };
        let message = message.unwrap();
        let window = decode_stats(message.payload().unwrap()).unwrap();
        assert_eq!(message.key(), Some(window.user_id.as_str().as_bytes()), "keyed by user");
        let key =
            (window.user_id.to_string(), window.window_start.timestamp_millis(), window.currency.to_string());
        let value = (
            window.order_count,
            window.paid_count,
            window.revenue_minor,
            window.cancelled_count,
            window.refunded_minor,
        );
        let want =
            expected.get(&key).unwrap_or_else(|| panic!("a window that should not exist: {key:?} {value:?}"));
        let over =
            value.0 > want.0 || value.1 > want.1 || value.2 > want.2 || value.3 > want.3 || value.4 > want.4;
        assert!(!over, "{key:?} went past the expected {want:?}: {value:?} (counted twice)");
        assert!(!window.is_final, "no window closes within an hour of grace");
        latest.insert(key, value);
    }
    shutdown.cancel();
    assert_eq!(stopped.await.unwrap(), Outcome::Clean);
    drop(tokio::task::spawn_blocking(move || drop(reader)));
}
