//! Projection throughput and latency, beside two baselines measured in the same run: the
//! raw consume rate of the same pre-filled topic, and the same row changes written
//! straight to PostgreSQL.
//!
//! Needs `make up`; run with `make bench` (or `cargo bench -p projector --bench
//! projection`). Appends a Markdown table to `$BENCH_REPORT` when set.
//!
//! Phases:
//! 1. fill a fresh 12-partition topic with `EVENTS` order events (orders created in
//!    waves of `WAVE`, then paid, then shipped or cancelled: each order's events are a
//!    few thousand records apart, as in a backlog);
//! 2. baseline: a consumer with the projector's settings reads every partition from the
//!    first offset to the end, touching each payload; timed from its first record to its
//!    last (median of three runs);
//! 3. the projection, with the service's default settings (`BATCH_SIZE`, `BATCH_WAIT`,
//!    `APPLY_CONNECTIONS`, asynchronous commit; each can be overridden through its
//!    environment variable), applies the same topic into a fresh database from the
//!    first offset to the end; timed from the assignment (start-up included) to the
//!    commit of the last batch;
//! 4. the bound it meets in PostgreSQL: the same events' row changes, computed in memory
//!    beforehand with the projection's own rules (`model::plan`, per partition in batches
//!    of `BATCH_SIZE`), written into a fresh database with the projector's set-based
//!    statements and a position per batch, partitions concurrently over `APPLY_CONNECTIONS`
//!    connections: no Kafka, no decoding (median of three runs);
//! 5. latency: a fresh topic and database, the projection subscribed as the service runs
//!    it, events produced at 1,000 per second for `PACED`; latency is the time from each
//!    record's create timestamp to the commit of its batch.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Utc;
use orders_domain::{
    CancelOrder, CancelReason, CreateOrder, Currency, LineItem, Order, OrderEvent, OrderId, PayOrder,
    PaymentId, ShipOrder, ShipmentId, Sku, TrackingNumber, UserId,
};
use orders_events::{EventMetadata, encode_event};
use orders_projection::Projection;
use orders_runtime::{CancellationToken, kafka::KafkaArgs, postgres::DatabaseUrl};
use orders_testkit::{kafka::TestKafka, postgres::TestDatabase};
use projector::{
    model,
    project::{self, ReadModel},
    schema::{self, PoolOptions},
};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
    producer::{FutureProducer, FutureRecord},
};
use uuid::Uuid;

const PARTITIONS: i32 = 12;
const EVENTS: usize = 300_000;
const WAVE: usize = 2_000;
const RATE: u64 = 1_000;
const PACED: Duration = Duration::from_secs(20);

/// Orders of `wave` orders at a time: all created, then most paid, then some shipped or
/// cancelled; about 2.5 events per order, until `count` events.
fn workload(count: usize) -> Vec<OrderEvent> {
    let mut events = Vec::with_capacity(count + 3 * WAVE);
    let mut n: u64 = 0;
    while events.len() < count {
        let mut wave: Vec<Order> = Vec::with_capacity(WAVE);
        let now = Utc::now();
        for _ in 0..WAVE {
            n += 1;
            let id = OrderId::from_uuid(Uuid::now_v7());
            let item = LineItem::new(Sku::new(format!("SKU-{}", n % 50)).unwrap(), 1 + (n % 3) as u32, 499);
            let user = UserId::new(format!("user-{}", n % 5_000)).unwrap();
            let cmd = CreateOrder::new(user, Currency::new("EUR").unwrap(), vec![item]).unwrap();
            let mut order = Order::default();
            let created = order.create(id, cmd, now).unwrap();
            order.apply(&created[0]).unwrap();
            events.extend(created);
            wave.push(order);
        }
        for (i, order) in wave.iter_mut().enumerate() {
            if i % 10 < 8 {
                let total = order.total().unwrap().amount_minor;
                let paid = order
                    .pay(PayOrder::new(PaymentId::new("pay").unwrap(), total, None).unwrap(), now)
                    .unwrap();
                order.apply(&paid[0]).unwrap();
                events.extend(paid);
            }
        }
        for (i, order) in wave.iter_mut().enumerate() {
            let next = match i % 10 {
                0..=4 => order.ship(
                    ShipOrder::new(ShipmentId::new("ship").unwrap(), TrackingNumber::new("TN").unwrap()),
                    now,
                ),
                5 | 8 => order.cancel(CancelOrder::new(CancelReason::new("changed mind").unwrap()), now),
                _ => continue,
            };
            events.extend(next.unwrap());
        }
    }
    events.truncate(count);
    events
}

fn kafka_args() -> KafkaArgs {
    KafkaArgs::plaintext(orders_testkit::kafka::bootstrap_servers())
}

async fn produce(producer: &FutureProducer, topic: &str, events: &[OrderEvent]) {
    for chunk in events.chunks(10_000) {
        let mut deliveries = Vec::with_capacity(chunk.len());
        for event in chunk {
            deliveries.push(enqueue(producer, topic, event).await);
        }
        for delivery in deliveries {
            delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
        }
    }
}

/// Queues one event for sending (waiting while the producer's queue is full).
async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    event: &OrderEvent,
) -> rdkafka::producer::DeliveryFuture {
    let key = event.order_id.to_string();
    let value = encode_event(&EventMetadata::new(Uuid::now_v7(), None), event);
    loop {
        match producer.send_result(FutureRecord::to(topic).key(&key).payload(&value)) {
            Ok(delivery) => return delivery,
            Err((e, _)) => {
                assert!(
                    matches!(
                        e,
                        rdkafka::error::KafkaError::MessageProduction(
                            rdkafka::types::RDKafkaErrorCode::QueueFull
                        )
                    ),
                    "{e}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Reads every partition from offset 0 until `count` records; returns events/s from the
/// first record to the last (the client's start-up, sometimes a second, is left out).
async fn raw_consume(topic: &str, count: usize, group: &str, decode: bool) -> f64 {
    let config = orders_projection::consumer_config(&settings_config().kafka.consumer_config(group));
    let consumer: StreamConsumer = config.create().unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        // The topic is fresh: it starts at offset 0 (an explicit offset, as the projection
        // uses: librdkafka resolves `Offset::Beginning` with a half-second lookup).
        assignment.add_partition_offset(topic, partition, Offset::Offset(0)).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    drop(assignment);
    let first = consumer.recv().await.unwrap();
    let started = Instant::now();
    let mut bytes = first.payload().map_or(0, <[u8]>::len);
    drop(first);
    for _ in 1..count {
        let message = consumer.recv().await.unwrap();
        let payload = message.payload().unwrap_or_default();
        bytes += payload.len();
        if decode {
            bytes += usize::from(orders_events::decode_event(payload).is_ok());
        }
    }
    let elapsed = started.elapsed();
    assert!(bytes > 0);
    (count - 1) as f64 / elapsed.as_secs_f64()
}

async fn migrated_pool(db: &TestDatabase) -> deadpool_postgres::Pool {
    let url: DatabaseUrl = db.url().parse().unwrap();
    schema::migrate(&url).await.unwrap();
    let session = orders_runtime::postgres::Session::default();
    let options = PoolOptions {
        application_name: "bench",
        schema: schema::LIVE,
        session: &session,
        asynchronous_commit: true,
    };
    schema::pool(&url, settings_config().apply_connections.into(), options).unwrap()
}

/// The service's configuration: its defaults (or the environment: `BATCH_SIZE`...),
/// pointed at the bench's brokers.
fn settings_config() -> projector::Config {
    use clap::Parser as _;
    let bootstrap = orders_testkit::kafka::bootstrap_servers();
    projector::Config::try_parse_from(["projector", "--kafka-bootstrap-servers", &bootstrap]).unwrap()
}

/// The projection's settings as the service makes them, on the bench's topics.
fn settings(topic: &str, dead_letters: &str, group: &str) -> orders_projection::Settings {
    let mut config = settings_config();
    config.orders_topic = topic.to_string();
    config.dead_letter_topic = dead_letters.to_string();
    config.consumer_group = group.to_string();
    projector::projection_settings(&config)
}

/// Applies the whole topic into a fresh database; returns events/s.
async fn project_all(topic: &str, dead_letters: &str, group: &str) -> f64 {
    let db = TestDatabase::create().await;
    let pool = migrated_pool(&db).await;
    let mut projection =
        Projection::assign_all(settings(topic, dead_letters, group), pool, ReadModel).await.unwrap();
    // Like the baseline's, the clock starts once the consumer is made and assigned.
    let started = Instant::now();
    assert!(projection.run_to_end(&CancellationToken::new()).await.unwrap());
    let elapsed = started.elapsed();
    let applied: i64 = projection.positions().values().map(|p| p.unwrap_or(0)).sum();
    assert_eq!(applied as usize, EVENTS, "every event applied");
    drop(projection);
    EVENTS as f64 / elapsed.as_secs_f64()
}

/// The PostgreSQL bound: the row changes of `events`, planned in memory as the projection
/// plans them (per partition, in batches of the service's `BATCH_SIZE`), then written
/// with the projector's statements into a fresh database, one transaction per batch with
/// its position, the partitions concurrently over the service's connections. Events/s of
/// the writes alone.
async fn set_based(events: &[OrderEvent]) -> f64 {
    let config = settings_config();
    let mut partitions: Vec<Vec<(usize, OrderEvent)>> = vec![Vec::new(); PARTITIONS as usize];
    for event in events {
        let partition = (event.order_id.as_uuid().as_u128() % PARTITIONS as u128) as usize;
        let slot = &mut partitions[partition];
        slot.push((slot.len(), event.clone()));
    }
    let mut plans: Vec<(i32, Vec<(model::Plan, i64)>)> = Vec::new();
    for (partition, events) in partitions.iter().enumerate() {
        let mut views: HashMap<Uuid, model::View> = HashMap::new();
        let mut batches = Vec::new();
        for batch in events.chunks(config.batch_size as usize) {
            let current = batch
                .iter()
                .filter_map(|(_, e)| views.get(&e.order_id.as_uuid()))
                .map(|v| (v.order_id, v.clone()))
                .collect();
            let plan = model::plan(current, &HashMap::new(), batch);
            for row in plan.inserts.iter().chain(&plan.updates) {
                let view = model::View {
                    order_id: row.order_id,
                    version: row.version,
                    user_id: row.user_id.clone(),
                    status: model::parse_status(row.status).unwrap(),
                    currency: row.currency.clone(),
                    total_minor: row.total_minor,
                    amount_paid_minor: row.amount_paid_minor,
                    missing_version: row.missing_version,
                };
                views.insert(row.order_id, view);
            }
            let next_offset = (batch.last().unwrap().0 + 1) as i64;
            batches.push((plan, next_offset));
        }
        plans.push((partition as i32, batches));
    }
    let mut runs = Vec::new();
    for _ in 0..3 {
        let db = TestDatabase::create().await;
        let pool = migrated_pool(&db).await;
        let started = Instant::now();
        let writers = plans.iter().map(|(partition, batches)| {
            let pool = pool.clone();
            async move {
                for (plan, next_offset) in batches {
                    let mut client = pool.get().await.unwrap();
                    let tx = client.transaction().await.unwrap();
                    project::write_rows(&tx, plan, *partition).await.unwrap();
                    tx.execute(
                        "INSERT INTO consumer_positions (projection, topic, partition, next_offset) VALUES ('bench', 'orders', $1, $2)
                         ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset",
                        &[partition, next_offset],
                    )
                    .await
                    .unwrap();
                    tx.commit().await.unwrap();
                }
            }
        });
        futures::future::join_all(writers).await;
        runs.push(events.len() as f64 / started.elapsed().as_secs_f64());
    }
    runs.sort_by(f64::total_cmp);
    println!("  set-based writes: {runs:.0?} events/s");
    runs[1]
}

/// The apply latency at `RATE` events per second: p50, p99, max.
async fn paced_latency(
    kafka: &mut TestKafka,
    producer: &FutureProducer,
    dead_letters: &str,
) -> [Duration; 3] {
    let topic = kafka.topic("bench-paced", PARTITIONS).await;
    let db = TestDatabase::create().await;
    let pool = migrated_pool(&db).await;
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let mut projection =
        Projection::subscribe(settings(&topic, dead_letters, &kafka.name("paced")), pool, ReadModel).unwrap();
    projection.on_commit({
        let latencies = Arc::clone(&latencies);
        move |committed| latencies.lock().unwrap().extend_from_slice(committed.latencies)
    });
    let token = CancellationToken::new();
    let running = tokio::spawn(projection.run(token.clone()));

    // Warm up until the group has assigned the partitions and events flow.
    let events = workload((RATE * PACED.as_secs()) as usize + 2_000);
    let (warm, paced) = events.split_at(2_000);
    produce(producer, &topic, warm).await;
    while latencies.lock().unwrap().len() < warm.len() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    latencies.lock().unwrap().clear();

    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = (RATE / 100) as usize;
    let mut deliveries = Vec::with_capacity(paced.len());
    for chunk in paced.chunks(per_tick) {
        tick.tick().await;
        for event in chunk {
            deliveries.push(enqueue(producer, &topic, event).await);
        }
    }
    for delivery in deliveries {
        delivery.await.unwrap().map_err(|(e, _)| e).unwrap();
    }
    while latencies.lock().unwrap().len() < paced.len() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token.cancel();
    running.await.unwrap().unwrap();
    let mut all = latencies.lock().unwrap().clone();
    all.sort_unstable();
    let at = |p: f64| all[((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1];
    [at(0.50), at(0.99), at(1.0)]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut kafka = TestKafka::new().await;
        let topic = kafka.topic("bench-orders", PARTITIONS).await;
        let dead_letters = kafka.topic("bench-dlq", 1).await;
        let producer: FutureProducer = kafka_args()
            .producer_config()
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .create()
            .unwrap();

        println!("projector bench: filling {topic} with {EVENTS} events...");
        let events = workload(EVENTS);
        let started = Instant::now();
        produce(&producer, &topic, &events).await;
        println!("  produced in {:.1}s", started.elapsed().as_secs_f64());
        let written = set_based(&events).await;
        drop(events);

        // The baseline reads the topic in a fraction of a second: the median of three runs.
        let mut raws = Vec::new();
        for run in 0..3 {
            raws.push(raw_consume(&topic, EVENTS, &kafka.name(&format!("raw-{run}")), false).await);
        }
        raws.sort_by(f64::total_cmp);
        let raw = raws[1];
        println!("  raw consume: {raw:.0} events/s (runs: {raws:.0?})");
        let decoded = raw_consume(&topic, EVENTS, &kafka.name("decode"), true).await;
        println!("  consume and decode: {decoded:.0} events/s");
        let applied = project_all(&topic, &dead_letters, &kafka.name("apply")).await;
        println!("  projection:  {applied:.0} events/s");
        let [p50, p99, max] = paced_latency(&mut kafka, &producer, &dead_letters).await;
        println!("  latency at {RATE}/s: p50 {p50:?} p99 {p99:?} max {max:?}");

        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        let ratio = applied / raw;
        let ratio_pg = applied / written;
        let table = format!(
            "### projector: events applied per second beside the raw consume rate and the PostgreSQL bound\n\n\
             Pre-filled topic: {EVENTS} order events, {PARTITIONS} partitions. Each reads it from the \
             first offset to the end, in the same run.\n\n\
             | measure | value |\n|---|---|\n\
             | raw consume (rdkafka StreamConsumer, the projection's consumer settings; first to last record, median of 3) | {raw:.0} events/s |\n\
             | for scale: consume and decode each envelope, nothing written | {decoded:.0} events/s |\n\
             | projection (decode, version check, upserts, positions, commit per partition batch; assignment to last commit) | {applied:.0} events/s |\n\
             | PostgreSQL bound: the same row changes, planned in memory beforehand, written with the projector's set-based statements and a position per batch, partitions concurrently (no Kafka, no decoding; median of 3) | {written:.0} events/s |\n\
             | ratio projection / raw (target >= 0.3) | {ratio:.2} |\n\
             | ratio projection / PostgreSQL bound (target >= 0.7) | {ratio_pg:.2} |\n\
             | apply latency at {RATE} events/s for {}s, record timestamp to commit: p50 / p99 / max (target p99 < 100 ms) | {} / {} / {} ms |\n\n",
            PACED.as_secs(),
            ms(p50),
            ms(p99),
            ms(max),
        );
        println!();
        orders_testkit::bench::report(&table);
    });
}
