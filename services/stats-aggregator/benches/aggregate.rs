//! `make bench`: the stats aggregator's throughput with exactly once on, beside the same
//! topology at least once (no transactions) and a raw rdkafka consume of the same topic,
//! measured in the same run against the local Kafka (`make up`); then the time to
//! restore a windows changelog of `BENCH_STATS_WINDOWS` (100,000) windows, beside a raw
//! read of the same changelog.
//!
//! The `orders` topic (12 partitions, as in `deploy/topics.txt`) holds
//! `BENCH_STATS_ORDERS` (40,000) orders of 500 users, each created and paid, then
//! shipped or (one in four) cancelled: 3 events per order, one second of event time
//! apart (a day and a half of hourly windows). Per round, each on fresh internal topics and a
//! fresh application id:
//!
//! 1. **Raw consume**: an rdkafka consumer reads every event from the start of the
//!    topic and does nothing with it; first to last message received.
//! 2. **Exactly once** and **at least once**, in alternating order from round to round:
//!    the service's own topology (`Config::aggregator`, both stages, the repartition by
//!    user, both changelogs, updates every second, commits every 100 ms) on a thread,
//!    as the service runs it. Timed from its first commit to the commit of the last
//!    record of the second stage, read from `streams_records_processed_total`, and
//!    counted in events of the input: both stages' records are done by then.
//!
//! `BENCH_ROUNDS` (3) rounds; the medians and the spread are reported. The restore is
//! measured `BENCH_ROUNDS` times on the same changelog. A markdown table is printed and
//! appended to `$BENCH_REPORT` when set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Parser as _;
use futures::future::join_all;
use orders_domain::{
    CancelReason, Currency, LineItem, OrderEvent, OrderEventPayload, OrderId, PaymentId, ShipmentId, Sku,
    TrackingNumber, UserId,
};
use orders_events::{EventMetadata, encode_event};
use orders_streams::{Guarantee, Stop};
use orders_testkit::{
    bench::{env_or, median, report, spread},
    kafka::TestKafka,
};
use prost::Message as _;
use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer as _},
    producer::{FutureProducer, FutureRecord},
};
use stats_aggregator::{Config, INTERNAL_TOPICS, SERVICE, aggregator::WindowKey, topology::WindowStats};
use uuid::Uuid;

const PARTITIONS: i32 = 12;
const USERS: usize = 500;

/// The order events, as (key, payload), each order's events in version order and the
/// orders interleaved; and how many user activities the first stage makes of them
/// (created, paid, cancelled: one each; shipped: none).
fn workload(orders: usize) -> (Vec<(String, Vec<u8>)>, usize) {
    let start = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).unwrap(); // 2026-01-01
    let mut per_order = Vec::new();
    let mut activities = 0;
    for i in 0..orders {
        let order = OrderId::from_uuid(Uuid::now_v7());
        let total_minor = 250 * (1 + i64::try_from(i % 4).unwrap());
        let currency = Currency::new(if i % 10 == 0 { "USD" } else { "EUR" }).unwrap();
        let last = if i % 4 == 0 {
            activities += 3;
            OrderEventPayload::Cancelled { reason: CancelReason::new("changed my mind").unwrap() }
        } else {
            activities += 2;
            OrderEventPayload::Shipped {
                shipment_id: ShipmentId::new(format!("SHP-{i}")).unwrap(),
                tracking_number: TrackingNumber::new(format!("TRK{i}")).unwrap(),
            }
        };
        let payloads = [
            OrderEventPayload::Created {
                user_id: UserId::new(format!("user-{}", i % USERS)).unwrap(),
                currency,
                items: vec![LineItem::new(Sku::new("SKU-1").unwrap(), 1, total_minor)],
                total_minor,
            },
            OrderEventPayload::Paid {
                payment_id: PaymentId::new(format!("pay-{i}")).unwrap(),
                amount_minor: total_minor,
                currency,
            },
            last,
        ];
        per_order.push((order, payloads));
    }
    let mut events = Vec::new();
    for version in 0..3 {
        for (order, payloads) in &per_order {
            let occurred_at = start + chrono::Duration::seconds(i64::try_from(events.len()).unwrap());
            let event = OrderEvent {
                order_id: *order,
                version: u64::try_from(version).unwrap() + 1,
                occurred_at,
                payload: payloads[version].clone(),
            };
            events.push((order.to_string(), encode_event(&EventMetadata::new(Uuid::now_v7(), None), &event)));
        }
    }
    (events, activities)
}

/// Produces `records` to `topic` (the partitioner picks the partition from the key, or
/// `partition` when given), each acknowledged.
async fn produce(kafka: &TestKafka, topic: &str, partition: Option<i32>, records: &[(Vec<u8>, Vec<u8>)]) {
    let producer: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.size", "1000000")
        .create()
        .expect("producer");
    for chunk in records.chunks(50_000) {
        let sends = chunk.iter().map(|(key, payload)| {
            let mut record = FutureRecord::to(topic).key(key).payload(payload);
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            producer.send(record, Duration::from_secs(60))
        });
        for sent in join_all(sends).await {
            sent.map_err(|(e, _)| e).expect("produce");
        }
    }
}

/// Reads `count` records of `partitions` partitions of `topic` from the start on a
/// blocking thread: the time from the first to the last.
async fn raw_read(kafka: &TestKafka, topic: &str, partitions: i32, count: usize) -> Duration {
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", kafka.name(&format!("raw-{}", orders_testkit::unique_suffix())))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition, Offset::Beginning).expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut first = None;
        for _ in 0..count {
            loop {
                assert!(Instant::now() < deadline, "the raw read did not finish in time");
                match consumer.poll(Duration::from_millis(100)) {
                    Some(message) => {
                        message.expect("receive");
                        break;
                    }
                    None => continue,
                }
            }
            first.get_or_insert_with(Instant::now);
        }
        first.expect("a first record").elapsed()
    })
    .await
    .expect("the raw read's thread")
}

/// The sum of every series of the metric `name` (a counter, or a summary's `_sum` or
/// `_count`) in the process's Prometheus rendering.
fn metric(name: &str) -> f64 {
    orders_runtime::metrics::handle()
        .render()
        .lines()
        .filter(|line| line.split([' ', '{']).next() == Some(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A fresh application of the aggregator on `orders`: its configuration (internal topics
/// created, `partitions` each).
async fn application(kafka: &mut TestKafka, orders: &str, partitions: i32, grace: &str) -> Config {
    let application_id = kafka.name(&format!("bench-stats-{}", orders_testkit::unique_suffix()));
    for suffix in INTERNAL_TOPICS {
        kafka.topic_named(&format!("{application_id}-{suffix}"), partitions).await;
    }
    let stats = kafka.topic_named(&format!("{application_id}-order-stats"), partitions).await;
    let dlq = kafka.topic_named(&format!("{application_id}-dlq"), 1).await;
    Config::try_parse_from([
        SERVICE,
        &format!("--kafka-bootstrap-servers={}", orders_testkit::kafka::bootstrap_servers()),
        &format!("--orders-topic={orders}"),
        &format!("--stats-topic={stats}"),
        &format!("--dead-letter-topic={dlq}"),
        &format!("--application-id={application_id}"),
        &format!("--window-grace={grace}"),
    ])
    .expect("the configuration")
}

/// Runs the aggregator of `config` with `guarantee` until it has committed `records`
/// records (both stages): `events` input events per second, from its first commit to
/// the last.
async fn aggregate(config: &Config, guarantee: Guarantee, records: usize, events: usize) -> f64 {
    let aggregator = config.aggregator().expect("the topology");
    let settings = orders_streams::Settings { guarantee, ..config.run_settings() };
    let stop = Stop::new();
    let running = std::thread::spawn({
        let stop = stop.clone();
        move || orders_streams::run(aggregator, &settings, &stop)
    });
    let before = metric("streams_records_processed_total");
    let commits = (metric("streams_commit_seconds_count"), metric("streams_commit_seconds_sum"));
    let processed = || metric("streams_records_processed_total") - before;
    let deadline = Instant::now() + Duration::from_secs(600);
    let (started, at_start) = loop {
        let now = processed();
        if now > 0.0 {
            break (Instant::now(), now);
        }
        if running.is_finished() {
            panic!("the aggregator stopped before its first commit: {:?}", running.join());
        }
        assert!(Instant::now() < deadline, "no commit in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    while processed() < records as f64 {
        assert!(!running.is_finished(), "the aggregator stopped after {} records", processed());
        assert!(Instant::now() < deadline, "only {} of {records} records in time", processed());
        // Not more often: rendering the metrics costs the machine the benchmark measures.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    eprintln!(
        "  {guarantee:?}: {:.0} commits, {:.2} s of {:.2} s in them",
        metric("streams_commit_seconds_count") - commits.0,
        metric("streams_commit_seconds_sum") - commits.1,
        elapsed.as_secs_f64()
    );
    stop.stop();
    tokio::task::spawn_blocking(move || running.join()).await.unwrap().unwrap().expect("a clean run");
    // Records per second over the measured part, in input events.
    let done = (records as f64 - at_start) / records as f64;
    done * events as f64 / elapsed.as_secs_f64()
}

/// A windows changelog of `windows` windows on partition 0 of the windows changelog of a
/// fresh one-partition application; its configuration.
async fn changelog_of(kafka: &mut TestKafka, windows: usize) -> Config {
    let orders = kafka.topic("bench-restore-orders", 1).await;
    let config = application(kafka, &orders, 1, "1000d").await;
    let records: Vec<(Vec<u8>, Vec<u8>)> = (0..windows)
        .map(|i| {
            let hour = 3_600_000 * i64::try_from(i / USERS).unwrap();
            let key = WindowKey {
                user_id: format!("user-{}", i % USERS),
                currency: "EUR".to_string(),
                start_ms: 1_767_225_600_000 + hour,
                end_ms: 1_767_225_600_000 + hour + 3_600_000,
            };
            let stats = WindowStats {
                order_count: 3,
                paid_count: 2,
                revenue_minor: 1500,
                cancelled_count: 1,
                refunded_minor: 500,
            };
            (key.encode_to_vec(), stats.encode_to_vec())
        })
        .collect();
    produce(kafka, &config.internal_topic("windows-changelog"), Some(0), &records).await;
    config
}

/// Starts the aggregator of `config` and waits until both of its tasks are restored: the
/// seconds its restores took, from `streams_restore_seconds`.
async fn restore(config: &Config) -> f64 {
    let aggregator = config.aggregator().expect("the topology");
    let settings = orders_streams::Settings {
        application_id: format!("{}-{}", config.application_id, orders_testkit::unique_suffix()),
        ..config.run_settings()
    };
    let (seconds, restores) =
        (metric("streams_restore_seconds_sum"), metric("streams_restore_seconds_count"));
    let stop = Stop::new();
    let running = std::thread::spawn({
        let stop = stop.clone();
        move || orders_streams::run(aggregator, &settings, &stop)
    });
    let deadline = Instant::now() + Duration::from_secs(600);
    while metric("streams_restore_seconds_count") < restores + 2.0 {
        assert!(!running.is_finished(), "the aggregator stopped before restoring");
        assert!(Instant::now() < deadline, "not restored in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.stop();
    tokio::task::spawn_blocking(move || running.join()).await.unwrap().unwrap().expect("a clean run");
    metric("streams_restore_seconds_sum") - seconds
}

#[tokio::main]
async fn main() {
    let orders: usize = env_or("BENCH_STATS_ORDERS", 40_000);
    let windows: usize = env_or("BENCH_STATS_WINDOWS", 100_000);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    // The recorder first: the runner's counters are read from it.
    orders_runtime::metrics::handle();
    let mut kafka = TestKafka::new().await;
    let topic = kafka.topic("bench-stats-orders", PARTITIONS).await;
    let (records, activities) = workload(orders);
    let events = records.len();
    let keyed: Vec<(Vec<u8>, Vec<u8>)> = records.into_iter().map(|(k, v)| (k.into_bytes(), v)).collect();
    produce(&kafka, &topic, None, &keyed).await;
    eprintln!("produced {events} events of {orders} orders ({activities} user activities) to {topic}");

    let (mut raw, mut exactly, mut least) = (Vec::new(), Vec::new(), Vec::new());
    let (mut on_off, mut on_raw) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let raw_rate = events as f64 / raw_read(&kafka, &topic, PARTITIONS, events).await.as_secs_f64();
        let mut rates = [0.0; 2];
        let order = if round % 2 == 1 { [0, 1] } else { [1, 0] };
        for which in order {
            let guarantee = [Guarantee::ExactlyOnce, Guarantee::AtLeastOnce][which];
            let config = application(&mut kafka, &topic, PARTITIONS, "1d").await;
            rates[which] = aggregate(&config, guarantee, events + activities, events).await;
        }
        eprintln!(
            "round {round}: raw consume {raw_rate:.0} events/s, exactly once {:.0}, at least once {:.0}",
            rates[0], rates[1]
        );
        raw.push(raw_rate);
        exactly.push(rates[0]);
        least.push(rates[1]);
        on_off.push(rates[0] / rates[1]);
        on_raw.push(rates[0] / raw_rate);
    }

    let config = changelog_of(&mut kafka, windows).await;
    let changelog = config.internal_topic("windows-changelog");
    let (mut restores, mut reads, mut restore_ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let read = raw_read(&kafka, &changelog, 1, windows).await.as_secs_f64();
        let restored = restore(&config).await;
        eprintln!("restore {round}: {restored:.2} s for {windows} windows, raw read {read:.2} s");
        restores.push(restored);
        reads.push(read);
        restore_ratios.push(restored / read);
    }
    let hours = events / 3600;
    let ms = |values: &[f64]| values.iter().map(|s| s * 1000.0).collect::<Vec<_>>();
    let table = format!(
        "## stats-aggregator: exactly once\n\n\
         {events} events ({orders} orders of {USERS} users created, paid, then shipped or one in four \
         cancelled; {activities} user activities through the repartition topic) on {PARTITIONS} \
         partitions, hourly windows over {hours} hours of event time. The service's topology, both stages, \
         commits every 100 ms; timed from its first commit to the last record of the second stage, in \
         input events. Medians of {rounds} rounds (spread in brackets); ratios are the medians of the \
         rounds' ratios.\n\n\
         | measure | events/s | exactly once / this |\n\
         |---|---|---|\n\
         | raw rdkafka consume of `orders` | {:.0} ({}) | {:.2} |\n\
         | at least once (no transactions) | {:.0} ({}) | {:.2} |\n\
         | exactly once | {:.0} ({}) | |\n\n\
         Restore of a windows changelog of {windows} windows (one partition), {rounds} times: {:.0} ms \
         ({} ms), {:.1} times a raw `read_committed` read of the same partition ({:.0} ms, {} ms).\n\n",
        median(&raw),
        spread(&raw),
        median(&on_raw),
        median(&least),
        spread(&least),
        median(&on_off),
        median(&exactly),
        spread(&exactly),
        median(&ms(&restores)),
        spread(&ms(&restores)),
        median(&restore_ratios),
        median(&ms(&reads)),
        spread(&ms(&reads)),
    );
    report(&table);
}
