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
use nix::sys::signal::Signal;
use orders_domain::{
    CancelReason, Currency, LineItem, OrderEvent, OrderEventPayload, OrderId, PaymentId, Sku, UserId,
};
use orders_events::{EventMetadata, decode_stats, encode_event};
use orders_runtime::{Runtime, lifecycle::Outcome};
use orders_testkit::{kafka::TestKafka, process::ServiceProcess};
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
/// Every order's first event comes first, then every second one, then every third, so
/// that an order's later events need what stage 1 remembered of its first; each
/// third ends with duplicates of some of its events.
fn stream() -> (Vec<(String, Vec<u8>)>, Expected) {
    let base = Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap().timestamp_millis();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut expected = Expected::new();
    let mut by_version: [Vec<(String, Vec<u8>)>; 3] = Default::default();
    let mut duplicates: [Vec<(String, Vec<u8>)>; 3] = Default::default();
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
                duplicates[version].push(record.clone());
            }
            by_version[version].push(record);
        }
    }
    let mut records = Vec::new();
    for (mut events, mut again) in by_version.into_iter().zip(duplicates) {
        records.append(&mut events);
        records.append(&mut again);
    }
    (records, expected)
}

/// The topics of one test and the stream produced to `orders`.
struct World {
    kafka: TestKafka,
    records: Vec<(String, Vec<u8>)>,
    orders: String,
    stats: String,
    dlq: String,
    app: String,
    expected: Expected,
}

impl World {
    async fn new() -> Self {
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
        Self { kafka, records, orders, stats, dlq, app, expected }
    }

    /// Produces the events of `range` (indexes into the stream).
    async fn produce(&self, range: std::ops::Range<usize>) {
        let producer: FutureProducer = self
            .kafka
            .client_config()
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .create()
            .unwrap();
        let sends = self.records[range].iter().map(|(key, payload)| {
            producer.send(FutureRecord::to(&self.orders).key(key).payload(payload), Duration::from_secs(30))
        });
        for sent in futures::future::join_all(sends).await {
            sent.map_err(|(e, _)| e).unwrap();
        }
    }

    /// How many events of `orders` the aggregator has committed (its group's offsets).
    async fn committed(&self) -> i64 {
        let (app, orders) = (self.app.clone(), self.orders.clone());
        let config = self.kafka.client_config();
        tokio::task::spawn_blocking(move || {
            use rdkafka::consumer::{BaseConsumer, Consumer as _};
            let consumer: BaseConsumer = config.clone().set("group.id", &app).create().unwrap();
            let mut partitions = rdkafka::TopicPartitionList::new();
            for partition in 0..PARTITIONS {
                partitions.add_partition(&orders, partition);
            }
            let committed = consumer.committed_offsets(partitions, Duration::from_secs(10)).unwrap();
            committed.elements().iter().filter_map(|e| e.offset().to_raw()).filter(|o| *o > 0).sum()
        })
        .await
        .unwrap()
    }

    /// The members of the aggregator's consumer group: how many partitions each is
    /// assigned (read from the group's description).
    async fn members(&self) -> Vec<usize> {
        let (app, config) = (self.app.clone(), self.kafka.client_config());
        tokio::task::spawn_blocking(move || {
            use rdkafka::consumer::{BaseConsumer, Consumer as _};
            let consumer: BaseConsumer = config.clone().create().unwrap();
            let groups = consumer.fetch_group_list(Some(&app), Duration::from_secs(10)).unwrap();
            let Some(group) = groups.groups().first() else { return Vec::new() };
            if group.state() != "Stable" {
                return Vec::new();
            }
            group.members().iter().map(|m| assigned_partitions(m.assignment().unwrap_or_default())).collect()
        })
        .await
        .unwrap()
    }

    /// The service's settings, as environment variables.
    fn env(&self, instance: &str) -> Vec<(String, String)> {
        [
            ("KAFKA_BOOTSTRAP_SERVERS", orders_testkit::kafka::bootstrap_servers()),
            // A killed member leaves the group when its session times out: keep that short.
            ("KAFKA_PROPERTIES", "session.timeout.ms=6000,heartbeat.interval.ms=1000".to_string()),
            ("ORDERS_TOPIC", self.orders.clone()),
            ("ORDER_STATS_TOPIC", self.stats.clone()),
            ("DEAD_LETTER_TOPIC", self.dlq.clone()),
            ("APPLICATION_ID", self.app.clone()),
            ("INSTANCE_ID", instance.to_string()),
            ("WINDOW_SIZE", "1m".to_string()),
            // Longer than the stream spans in event time: no window closes, none is late
            // (which events are late would depend on how fast each partition goes).
            ("WINDOW_GRACE", "1h".to_string()),
            ("EMIT_INTERVAL", "200ms".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The service in-process, as instance `instance`.
    async fn start(&self, instance: &str) -> InProcess {
        self.start_with(instance, &[]).await
    }

    /// The service in-process, its settings changed by `extra` (variable, value).
    async fn start_with(&self, instance: &str, extra: &[(&str, &str)]) -> InProcess {
        let mut args = vec![SERVICE.to_string(), "--admin-addr=127.0.0.1:0".to_string()];
        let mut env = self.env(instance);
        env.retain(|(var, _)| !extra.iter().any(|(changed, _)| changed == var));
        env.extend(extra.iter().map(|(var, value)| ((*var).to_string(), (*value).to_string())));
        for (var, value) in env {
            if var == "WALL_CLOCK_CLOSE" {
                args.push(format!("--{}", flag(&var)));
            } else if var != "KAFKA_PROPERTIES" {
                args.push(format!("--{}={value}", flag(&var)));
            }
        }
        let config = Config::try_parse_from(args).unwrap();
        let mut runtime = Runtime::new(SERVICE, &config.runtime);
        let addr = build(config, &mut runtime).await.unwrap();
        let shutdown = runtime.shutdown_token();
        let stopped = tokio::spawn(runtime.run_until(std::future::pending()));
        // Generous: the first assignment waits for the group's join, slow on a loaded broker.
        orders_testkit::process::wait_until_ready(addr, Duration::from_secs(180), SERVICE).await;
        InProcess { shutdown, stopped }
    }

    /// Reads `order-stats` until the latest value of every window is the expected one;
    /// fails as soon as a value goes past it. `progress` runs after each record with
    /// the number of records read.
    async fn check(&self, mut progress: impl AsyncFnMut(usize)) {
        let reader = self.kafka.consumer_from_start(&self.stats, PARTITIONS);
        let mut latest: Expected = BTreeMap::new();
        let mut read = 0;
        let deadline = Instant::now() + Duration::from_secs(300);
        while latest != self.expected {
            assert!(
                Instant::now() < deadline,
                "{} of {} windows as expected",
                self.expected.iter().filter(|(k, v)| latest.get(*k) == Some(v)).count(),
                self.expected.len()
            );
            let Ok(message) = tokio::time::timeout(Duration::from_secs(5), reader.recv()).await else {
                continue;
            };
            let message = message.unwrap();
            let window = decode_stats(message.payload().unwrap()).unwrap();
            assert_eq!(message.key(), Some(window.user_id.as_str().as_bytes()), "keyed by user");
            let key = (
                window.user_id.to_string(),
                window.window_start.timestamp_millis(),
                window.currency.to_string(),
            );
            let value = (
                window.order_count,
                window.paid_count,
                window.revenue_minor,
                window.cancelled_count,
                window.refunded_minor,
            );
            let want = self
                .expected
                .get(&key)
                .unwrap_or_else(|| panic!("a window that should not exist: {key:?} {value:?}"));
            let over = value.0 > want.0
                || value.1 > want.1
                || value.2 > want.2
                || value.3 > want.3
                || value.4 > want.4;
            assert!(!over, "{key:?} went past the expected {want:?}: {value:?} (counted twice)");
            assert!(!window.is_final, "no window closes within an hour of grace");
            latest.insert(key, value);
            read += 1;
            progress(read).await;
        }
        drop(tokio::task::spawn_blocking(move || drop(reader)));
    }
}

/// The number of partitions in a consumer group member's assignment (Kafka's consumer
/// protocol: version, then per topic its name and partitions, then user data).
fn assigned_partitions(assignment: &[u8]) -> usize {
    let int = |at: usize, width: usize| -> Option<usize> {
        let bytes = assignment.get(at..at + width)?;
        Some(bytes.iter().fold(0usize, |n, b| n << 8 | usize::from(*b)))
    };
    let mut at = 2; // the version
    let mut partitions = 0;
    let Some(topics) = int(at, 4) else { return 0 };
    at += 4;
    for _ in 0..topics {
        let Some(name) = int(at, 2) else { return partitions };
        at += 2 + name;
        let Some(count) = int(at, 4) else { return partitions };
        at += 4 + 4 * count;
        partitions += count;
    }
    partitions
}

/// `ORDER_STATS_TOPIC` → `stats-topic`: the flag of a variable (the two that differ).
fn flag(var: &str) -> String {
    match var {
        "ORDER_STATS_TOPIC" => "stats-topic".to_string(),
        other => other.to_lowercase().replace('_', "-"),
    }
}

struct InProcess {
    shutdown: orders_runtime::CancellationToken,
    stopped: tokio::task::JoinHandle<Outcome>,
}

impl InProcess {
    /// Whether it stopped by itself (a task failed).
    fn ended(&self) -> bool {
        self.stopped.is_finished()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        assert_eq!(self.stopped.await.unwrap(), Outcome::Clean);
    }
}

/// The lag this process reports on `topic` (`consumer_lag_records`, summed over its
/// partitions), if it reports any.
fn reported_lag(topic: &str) -> Option<f64> {
    let rendered = orders_runtime::metrics::handle().render();
    let label = format!("topic=\"{topic}\"");
    let values: Vec<f64> = rendered
        .lines()
        .filter(|line| line.starts_with("consumer_lag_records{") && line.contains(&label))
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// All of the stream, then the windows; and once it is all read, the aggregator reports
/// no lag on `orders` (exactly once commits through the producer: a lag computed from
/// the consumer's own commits would never come down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_duplicates_gives_exactly_the_expected_windows() {
    let world = World::new().await;
    world.produce(0..world.records.len()).await;
    let service = world.start("only").await;
    world.check(async |_| {}).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while reported_lag(&world.orders) != Some(0.0) {
        assert!(tokio::time::Instant::now() < deadline, "lag on orders: {:?}", reported_lag(&world.orders));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    service.stop().await;
}

/// Two replicas share the partitions (and move them between each other as the second
/// joins, half of the stream already there): the same windows as one. The rest of the
/// stream is produced once both hold partitions, so both do some of the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_give_the_windows_of_one() {
    let world = World::new().await;
    let half = world.records.len() / 2;
    world.produce(0..half).await;
    let (first, second) = tokio::join!(world.start("one"), world.start("two"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let members = world.members().await;
        if members.len() == 2 && members.iter().all(|&partitions| partitions > 0) {
            break;
        }
        assert!(
            !first.ended() && !second.ended(),
            "an instance ended while the group formed (one ended: {}, two ended: {}); members {members:?}",
            first.ended(),
            second.ended()
        );
        assert!(Instant::now() < deadline, "not two members with partitions each: {members:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    world.produce(half..world.records.len()).await;
    world.check(async |_| {}).await;
    tokio::join!(first.stop(), second.stop());
}

/// The binary killed with SIGKILL three times while it works, restarted each time
/// (restoring both stores from their changelogs): exactly the windows of an
/// uninterrupted run. The stream is produced in thirds, one per run, so that each run
/// needs what the runs before it committed of each order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_several_times_it_neither_loses_nor_doubles_a_count() {
    let world = World::new().await;
    let env = world.env("crashing");
    let start = async || {
        let mut process = ServiceProcess::start(env!("CARGO_BIN_EXE_stats-aggregator"), "ADMIN_ADDR", &env);
        process.wait_for("/readyz", 200, Duration::from_secs(180)).await;
        process
    };
    let third = world.records.len() / 3;
    let mut process = start().await;
    for part in 0..3 {
        let produced = if part == 2 { world.records.len() } else { third * (part + 1) };
        world.produce(third * part..produced).await;
        // Killed once it has committed some of this third.
        let deadline = Instant::now() + Duration::from_secs(120);
        while world.committed().await <= i64::try_from(third * part).unwrap() {
            assert!(Instant::now() < deadline, "nothing of part {part} committed; logs:\n{}", process.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        process.signal(Signal::SIGKILL);
        process.wait_exit(Duration::from_secs(10)).await;
        process = start().await;
    }
    world.check(async |_| {}).await;
    process.signal(Signal::SIGTERM);
    assert!(
        process.wait_exit(Duration::from_secs(60)).await.success(),
        "clean stop; logs:\n{}",
        process.logs()
    );
}

/// A partition that stops receiving records: its stream time stands still, and with
/// `WALL_CLOCK_CLOSE` its windows close by wall-clock time all the same (2 s windows,
/// 3 s grace: the final record within seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_partitions_windows_close_by_wall_clock() {
    let world = World::new().await;
    let service = world
        .start_with("idle", &[("WINDOW_SIZE", "2s"), ("WINDOW_GRACE", "3s"), ("WALL_CLOCK_CLOSE", "true")])
        .await;
    let order = OrderId::from_uuid(Uuid::now_v7());
    let created = OrderEvent {
        order_id: order,
        version: 1,
        occurred_at: Utc::now(),
        payload: OrderEventPayload::Created {
            user_id: UserId::new("idle-user").unwrap(),
            currency: Currency::new("EUR").unwrap(),
            items: vec![LineItem::new(Sku::new("SKU-1").unwrap(), 1, 100)],
            total_minor: 100,
        },
    };
    let producer: FutureProducer = world.kafka.client_config().create().unwrap();
    let payload = encode_event(&EventMetadata::new(Uuid::now_v7(), None), &created);
    let key = order.to_string();
    let record = FutureRecord::to(&world.orders).key(&key).payload(&payload);
    producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();

    let reader = world.kafka.consumer_from_start(&world.stats, PARTITIONS);
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        assert!(Instant::now() < deadline, "no final record by wall clock");
        let Ok(message) = tokio::time::timeout(Duration::from_secs(5), reader.recv()).await else { continue };
        let window = decode_stats(message.unwrap().payload().unwrap()).unwrap();
        if window.is_final {
            break window;
        }
    };
    assert_eq!((last.user_id.as_str(), last.order_count), ("idle-user", 1));
    drop(tokio::task::spawn_blocking(move || drop(reader)));
    service.stop().await;
}

/// Poison on `orders` (a value that is not an event, an envelope of an event type this
/// reader does not know, a record without value) goes to the dead-letter topic with its
/// reason, origin and original headers and bytes, and the events around it are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_with_its_reason_and_the_rest_is_counted() {
    use prost::Message as _;
    use rdkafka::message::{Header, Headers as _, OwnedHeaders};

    let world = World::new().await;
    let service = world.start("poisoned").await;
    let order = OrderId::from_uuid(Uuid::now_v7());
    let key = order.to_string();
    let occurred_at = at(Utc::now().timestamp_millis());
    let event = |version, payload| {
        let event = OrderEvent { order_id: order, version, occurred_at, payload };
        encode_event(&EventMetadata::new(Uuid::now_v7(), None), &event)
    };
    let created = event(
        1,
        OrderEventPayload::Created {
            user_id: UserId::new("poisoned-user").unwrap(),
            currency: Currency::new("EUR").unwrap(),
            items: vec![LineItem::new(Sku::new("SKU-1").unwrap(), 1, 700)],
            total_minor: 700,
        },
    );
    let paid = event(
        2,
        OrderEventPayload::Paid {
            payment_id: PaymentId::new("pay-poisoned").unwrap(),
            amount_minor: 700,
            currency: Currency::new("EUR").unwrap(),
        },
    );
    let unknown = orders_events::pb::EventEnvelope {
        event_id: Uuid::now_v7().to_string(),
        order_id: key.clone(),
        version: 2,
        correlation_id: Uuid::now_v7().to_string(),
        occurred_at: Some(prost_types::Timestamp { seconds: occurred_at.timestamp(), nanos: 0 }),
        ..Default::default()
    }
    .encode_to_vec();
    let garbage = b"\xff\x00 not protobuf".to_vec();

    // In order on the order's partition: created, the three poisons, paid.
    let producer: FutureProducer =
        world.kafka.client_config().set("enable.idempotence", "true").create().unwrap();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for value in [Some(&created), Some(&garbage), Some(&unknown), None, Some(&paid)] {
        let headers = OwnedHeaders::new().insert(Header { key: "traceparent", value: Some(traceparent) });
        let mut record = FutureRecord::<String, Vec<u8>>::to(&world.orders).key(&key).headers(headers);
        if let Some(value) = value {
            record = record.payload(value);
        }
        producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
    }

    let reader = world.kafka.consumer_from_start(&world.dlq, 1);
    let mut dead = Vec::new();
    while dead.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(60), reader.recv())
            .await
            .expect("three dead letters within a minute")
            .unwrap();
        let headers: BTreeMap<String, String> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into()))
            })
            .into_iter()
            .flatten()
            .collect();
        dead.push((message.payload().map(<[u8]>::to_vec), headers));
    }
    drop(tokio::task::spawn_blocking(move || drop(reader)));
    let reasons: Vec<&str> = dead.iter().map(|(_, h)| h["dlq.reason"].as_str()).collect();
    assert!(reasons[0].starts_with("undecodable event"), "{reasons:?}");
    assert!(reasons[1].contains("no payload that this reader knows"), "{reasons:?}");
    assert_eq!(reasons[2], "the record has no value");
    assert_eq!(dead[0].0.as_deref(), Some(garbage.as_slice()), "the original bytes");
    assert_eq!(dead[1].0.as_deref(), Some(unknown.as_slice()));
    for (_, headers) in &dead {
        assert_eq!(headers["traceparent"], traceparent, "the original headers: {headers:?}");
        assert_eq!(headers["dlq.origin.topic"], world.orders);
        assert_eq!(headers["dlq.consumer"], world.app);
        assert!(headers["dlq.origin.offset"].parse::<i64>().is_ok(), "{headers:?}");
    }

    // The aggregator went on: the order's creation and payment are in its window.
    let reader = world.kafka.consumer_from_start(&world.stats, PARTITIONS);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the payment after the poison was never counted");
        let Ok(message) = tokio::time::timeout(Duration::from_secs(5), reader.recv()).await else { continue };
        let window = decode_stats(message.unwrap().payload().unwrap()).unwrap();
        assert_eq!(window.user_id.as_str(), "poisoned-user");
        if (window.order_count, window.paid_count, window.revenue_minor) == (1, 1, 700) {
            break;
        }
    }
    drop(tokio::task::spawn_blocking(move || drop(reader)));
    service.stop().await;
}

/// An activity too late for its window (its event an hour older than what the user's
/// task has seen, with a grace of a second) goes to the late-events topic, with the
/// headers of the event it came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_activity_goes_to_the_late_events_topic_with_its_headers() {
    use rdkafka::message::{Header, Headers as _, OwnedHeaders};

    let world = World::new().await;
    let service = world.start_with("late", &[("WINDOW_GRACE", "1s")]).await;
    let order = OrderId::from_uuid(Uuid::now_v7());
    let key = order.to_string();
    let now = Utc::now().timestamp_millis();
    // One order: created now, then "paid an hour ago" (the same order, so the two reach
    // the user's task in this order).
    let created = OrderEvent {
        order_id: order,
        version: 1,
        occurred_at: at(now),
        payload: OrderEventPayload::Created {
            user_id: UserId::new("late-user").unwrap(),
            currency: Currency::new("EUR").unwrap(),
            items: vec![LineItem::new(Sku::new("SKU-1").unwrap(), 1, 300)],
            total_minor: 300,
        },
    };
    let paid = OrderEvent {
        order_id: order,
        version: 2,
        occurred_at: at(now - 3_600_000),
        payload: OrderEventPayload::Paid {
            payment_id: PaymentId::new("pay-late").unwrap(),
            amount_minor: 300,
            currency: Currency::new("EUR").unwrap(),
        },
    };
    let producer: FutureProducer =
        world.kafka.client_config().set("enable.idempotence", "true").create().unwrap();
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    for event in [&created, &paid] {
        let payload = encode_event(&EventMetadata::new(Uuid::now_v7(), None), event);
        let headers = OwnedHeaders::new().insert(Header { key: "traceparent", value: Some(traceparent) });
        let record = FutureRecord::to(&world.orders).key(&key).payload(&payload).headers(headers);
        producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).unwrap();
    }

    let late_topic = format!("{}-late-events", world.app);
    let reader = world.kafka.consumer_from_start(&late_topic, PARTITIONS);
    let message = tokio::time::timeout(Duration::from_secs(60), reader.recv())
        .await
        .expect("a late activity within a minute")
        .unwrap();
    assert_eq!(message.key(), Some("late-user".as_bytes()), "keyed by user");
    let header =
        message.headers().and_then(|h| h.iter().find(|h| h.key == "traceparent")).and_then(|h| h.value);
    assert_eq!(header, Some(traceparent.as_bytes()), "the event's headers");
    drop(tokio::task::spawn_blocking(move || drop(reader)));

    service.stop().await;
}
