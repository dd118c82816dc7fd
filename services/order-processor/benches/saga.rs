//! `make bench`: the order saga's throughput with its real database effects, beside a
//! raw rdkafka consume of the same topic, measured in the same run against the local
//! Kafka and PostgreSQL (`make up`).
//!
//! The topic (12 partitions, as `orders` in `deploy/topics.txt`) holds
//! `BENCH_SAGA_ORDERS` (3,000) orders of one to three lines over 20 tracked SKUs, each
//! created, paid and shipped: 3 events per order. Per round:
//!
//! 1. **Raw consume**: an rdkafka `StreamConsumer` reads every event from the start of
//!    the topic and does nothing with it; first to last message received.
//! 2. **Raw PostgreSQL, effects once**: the least a consumer with effects once does
//!    per event: one transaction inserting the event's inbox row, over as many
//!    connections as the processor's pool (8), the events' ids from memory.
//! 3. **Saga**: the processor's consumer (its default settings: concurrency 64) with
//!    the saga's router, on a fresh database, reads the same events: per event the
//!    inbox row, the reservation, shipment or stock change, the outcome and the outbox
//!    row of a command (`ShipOrder` per paid order). The outbox is not relayed here
//!    (that is the relay's benchmark). Timed from the first to the last inbox row's
//!    transaction. Twice: a transaction per event (8 at once, the pool's size: the
//!    saga before group commit), then the saga's default [`Batching`] (2 committers,
//!    up to 64 events per transaction).
//!
//! `BENCH_ROUNDS` (3) rounds, the four in that order in each; the medians and the spread are
//! reported. A markdown table is printed and appended to `$BENCH_REPORT` when set.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use chrono::Utc;
use futures::future::join_all;
use order_processor::saga::{Batching, Saga};
use orders_consumer::{Consumer, Settings, Store};
use orders_domain::{
    Currency, LineItem, OrderEvent, OrderEventPayload, OrderId, PaymentId, ShipmentId, Sku, TrackingNumber,
    UserId,
};
use orders_events::{EventMetadata, encode_event};
use orders_testkit::{
    bench::{env_or, median, report, spread},
    kafka::TestKafka,
    postgres::TestDatabase,
};
use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{Consumer as _, StreamConsumer},
    producer::{FutureProducer, FutureRecord},
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const PARTITIONS: i32 = 12;
const SKUS: usize = 20;
/// The saga before group commit: a transaction per event, as many at once as the
/// processor's pool has connections.
const PER_EVENT: Batching = Batching { committers: 8, max_batch: 1 };

fn sku(i: usize) -> String {
    format!("SKU-{:02}", i % SKUS)
}

/// Created, paid and shipped events of `orders` orders, as (key, payload), each
/// order's events in order and the orders interleaved.
fn workload(orders: usize) -> Vec<(String, Vec<u8>)> {
    let mut per_order = Vec::new();
    for i in 0..orders {
        let order = OrderId::from_uuid(Uuid::now_v7());
        let items: Vec<LineItem> = (0..=i % 3)
            .map(|line| {
                LineItem::new(Sku::new(sku(i * 7 + line)).unwrap(), u32::try_from(line + 1).unwrap(), 250)
            })
            .collect();
        let total_minor = items.iter().map(|item| i64::from(item.quantity) * item.unit_price_minor).sum();
        let payloads = [
            OrderEventPayload::Created {
                user_id: UserId::new(format!("user-{}", i % 100)).unwrap(),
                currency: Currency::new("EUR").unwrap(),
                items,
                total_minor,
            },
            OrderEventPayload::Paid {
                payment_id: PaymentId::new(format!("pay-{i}")).unwrap(),
                amount_minor: total_minor,
                currency: Currency::new("EUR").unwrap(),
            },
            OrderEventPayload::Shipped {
                shipment_id: ShipmentId::new(format!("SHP-{i}")).unwrap(),
                tracking_number: TrackingNumber::new(format!("TRK{i}")).unwrap(),
            },
        ];
        let events: Vec<Vec<u8>> = payloads
            .into_iter()
            .zip(1..)
            .map(|(payload, version)| {
                let event = OrderEvent { order_id: order, version, occurred_at: Utc::now(), payload };
                encode_event(&EventMetadata::new(Uuid::now_v7(), None), &event)
            })
            .collect();
        per_order.push((order.to_string(), events));
    }
    let mut interleaved = Vec::new();
    for version in 0..3 {
        for (key, events) in &per_order {
            interleaved.push((key.clone(), events[version].clone()));
        }
    }
    interleaved
}

/// Reads `events` records of `topic` from the start: records/s, first to last.
async fn raw_consume(kafka: &TestKafka, topic: &str, events: usize) -> f64 {
    let consumer: StreamConsumer = kafka
        .client_config()
        .set("group.id", kafka.name(&format!("raw-{}", orders_testkit::unique_suffix())))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        assignment.add_partition_offset(topic, partition, Offset::Beginning).expect("assignment");
    }
    consumer.assign(&assignment).expect("assign");
    let mut first = None;
    for _ in 0..events {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv()).await;
        message.expect("a record within a minute").expect("receive");
        first.get_or_insert_with(Instant::now);
    }
    let elapsed = first.expect("a first record").elapsed();
    // Dropping a consumer can block in librdkafka's destroy; not the benchmark's business.
    drop(tokio::task::spawn_blocking(move || drop(consumer)));
    events as f64 / elapsed.as_secs_f64()
}

/// One transaction per event inserting its inbox row, over the pool's connections:
/// events/s.
async fn raw_postgres(events: usize) -> f64 {
    let db = TestDatabase::create().await;
    order_processor::migrate(db.pool(), "raw").await.expect("migrate");
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers = (0..8).map(|_| {
        let (pool, next) = (db.pool().clone(), std::sync::Arc::clone(&next));
        tokio::spawn(async move {
            let mut client = pool.get().await.expect("connection");
            let insert =
                client.prepare("INSERT INTO consumer_inbox (consumer, id) VALUES ('raw', $1)").await.unwrap();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < events {
                let tx = client.transaction().await.expect("begin");
                tx.execute(&insert, &[&Uuid::now_v7().to_string()]).await.expect("insert");
                tx.commit().await.expect("commit");
            }
        })
    });
    for worker in join_all(workers).await {
        worker.expect("worker");
    }
    events as f64 / started.elapsed().as_secs_f64()
}

/// The saga, its steps grouped as `batching` says, over `events` records of `topic` on a
/// fresh database: events/s, first to last inbox transaction.
async fn saga(
    kafka: &TestKafka,
    (topic, dlq, commands): (&str, &str, &str),
    events: usize,
    batching: Batching,
) -> f64 {
    let db = TestDatabase::create().await;
    let name = kafka.name(&format!("saga-{}", orders_testkit::unique_suffix()));
    order_processor::migrate(db.pool(), &name).await.expect("migrate");
    let client = db.pool().get().await.expect("connection");
    for i in 0..SKUS {
        client
            .execute("INSERT INTO inventory (sku, available) VALUES ($1, 100000000)", &[&sku(i)])
            .await
            .expect("stock");
    }
    let settings = Settings::new(&name, &[topic], kafka.client_config(), dlq);
    let router = Saga::new(db.pool().clone(), &name, commands, batching).router();
    let consumer = Consumer::new(settings, Store::new(db.pool().clone(), &name), router).expect("consumer");
    let token = CancellationToken::new();
    let running = tokio::spawn(consumer.run(token.clone()));
    let deadline = Instant::now() + Duration::from_secs(600);
    let handled = || async {
        let row = client.query_one("SELECT count(*) FROM consumer_inbox", &[]).await.expect("count");
        usize::try_from(row.get::<_, i64>(0)).unwrap()
    };
    while handled().await < events {
        assert!(Instant::now() < deadline, "the saga did not handle every event in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    token.cancel();
    running.await.expect("joined").expect("the consumer stops cleanly");
    let row = client
        .query_one(
            "SELECT EXTRACT(EPOCH FROM max(handled_at) - min(handled_at))::float8,
                    (SELECT count(*) FROM consumer_dead_letters), (SELECT count(*) FROM shipments)
             FROM consumer_inbox",
            &[],
        )
        .await
        .expect("timing");
    let (seconds, dead, shipped): (f64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(dead, 0, "no dead letters");
    assert_eq!(usize::try_from(shipped).unwrap(), events / 3, "a shipment per order");
    events as f64 / seconds
}

#[tokio::main]
async fn main() {
    let orders: usize = env_or("BENCH_SAGA_ORDERS", 3_000);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let mut kafka = TestKafka::new().await;
    let topic = kafka.topic("bench-saga", PARTITIONS).await;
    let dlq = kafka.topic("bench-saga-dlq", 1).await;
    let commands = kafka.topic("bench-saga-commands", PARTITIONS).await;
    let records = workload(orders);
    let events = records.len();
    let producer: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let sends = records.iter().map(|(key, payload)| {
        producer.send(FutureRecord::to(&topic).key(key).payload(payload), Duration::from_secs(30))
    });
    for sent in join_all(sends).await {
        sent.map_err(|(e, _)| e).expect("produce");
    }
    eprintln!("produced {events} events of {orders} orders to {topic}");

    let (mut raw, mut inbox, mut handled) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ratios, mut inbox_ratios) = (Vec::new(), Vec::new());
    let (mut single, mut single_ratios) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let raw_rate = raw_consume(&kafka, &topic, events).await;
        let inbox_rate = raw_postgres(events).await;
        let topics = (topic.as_str(), dlq.as_str(), commands.as_str());
        let single_rate = saga(&kafka, topics, events, PER_EVENT).await;
        let saga_rate = saga(&kafka, topics, events, Batching::default()).await;
        eprintln!(
            "round {round}: raw consume {raw_rate:.0} events/s, raw PostgreSQL {inbox_rate:.0}, \
             saga with a transaction per event {single_rate:.0}, saga {saga_rate:.0}"
        );
        single.push(single_rate);
        single_ratios.push(saga_rate / single_rate);
        raw.push(raw_rate);
        inbox.push(inbox_rate);
        handled.push(saga_rate);
        ratios.push(saga_rate / raw_rate);
        inbox_ratios.push(saga_rate / inbox_rate);
    }
    let table = format!(
        "## order-processor: the saga\n\n\
         {events} events ({orders} orders created, paid and shipped; 1-3 lines over {SKUS} tracked SKUs) \
         on {PARTITIONS} partitions. Saga: the processor's consumer at concurrency 64, per event the inbox \
         row, the effect, the outcome and the outbox row (not relayed); its steps grouped into \
         transactions by 2 committers (up to 64 steps each), or one transaction per event (8 at once) \
         as before group commit. Raw PostgreSQL: one transaction per \
         event inserting its inbox row, 8 connections. Medians of {rounds} rounds (spread in brackets); \
         ratios are the medians of the rounds' ratios.\n\n\
         | measure | events/s | saga / this |\n\
         |---|---|---|\n\
         | raw rdkafka consume | {:.0} ({}) | {:.4} |\n\
         | raw PostgreSQL, a transaction per event with its inbox row | {:.0} ({}) | {:.2} |\n\
         | saga, a transaction per event | {:.0} ({}) | {:.2} |\n\
         | saga | {:.0} ({}) | |\n\n",
        median(&raw),
        spread(&raw),
        median(&ratios),
        median(&inbox),
        spread(&inbox),
        median(&inbox_ratios),
        median(&single),
        spread(&single),
        median(&single_ratios),
        median(&handled),
        spread(&handled),
    );
    report(&table);
}
