//! The projection loop against the real Kafka and PostgreSQL (`make up`), with a handler
//! that records every record it applies and counts applications, so that a record
//! applied twice or skipped shows.
#![allow(clippy::unwrap_used, unreachable_pub)]

use std::{collections::BTreeMap, time::Duration};

use deadpool_postgres::{Pool, Transaction};
use orders_projection::{Batch, DeadLetter, Handler, Outcome, POSITIONS_TABLE_SQL, Projection, Settings};
use orders_testkit::{kafka::TestKafka, postgres::TestDatabase};
use rdkafka::{
    Message,
    consumer::StreamConsumer,
    message::Headers,
    producer::{FutureProducer, FutureRecord},
};
use tokio_util::sync::CancellationToken;

/// Records each record once in `seen` and counts every application in `applications`;
/// a payload of `poison` is dead-lettered.
#[derive(Debug)]
struct Recorder;

impl Handler for Recorder {
    type Error = tokio_postgres::Error;

    async fn apply(&self, tx: &Transaction<'_>, batch: &Batch<'_>) -> Result<Outcome, Self::Error> {
        let mut outcome = Outcome::default();
        let insert = tx
            .prepare_cached(
                "INSERT INTO seen (partition, \"offset\", payload) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .await?;
        for (index, record) in batch.records.iter().enumerate() {
            let payload = String::from_utf8_lossy(record.payload.as_deref().unwrap_or_default()).to_string();
            if payload == "poison" {
                outcome.dead_letters.push(DeadLetter { index, reason: "poisoned".into() });
                continue;
            }
            tx.execute(&insert, &[&batch.partition, &record.offset, &payload]).await?;
        }
        let count = i64::try_from(batch.records.len() - outcome.dead_letters.len()).unwrap();
        tx.execute("UPDATE applications SET n = n + $1", &[&count]).await?;
        Ok(outcome)
    }
}

struct World {
    db: TestDatabase,
    kafka: TestKafka,
    topic: String,
    dead_letters: String,
    producer: FutureProducer,
}

impl World {
    async fn new(partitions: i32) -> Self {
        let db = TestDatabase::create().await;
        let client = db.pool().get().await.unwrap();
        client.batch_execute(POSITIONS_TABLE_SQL).await.unwrap();
        client
            .batch_execute(
                "CREATE TABLE seen (partition INT, \"offset\" BIGINT, payload TEXT, PRIMARY KEY (partition, \"offset\"));
                 CREATE TABLE applications (n BIGINT NOT NULL); INSERT INTO applications VALUES (0);",
            )
            .await
            .unwrap();
        let mut kafka = TestKafka::new().await;
        let topic = kafka.topic("records", partitions).await;
        let dead_letters = kafka.topic("dlq", 1).await;
        let producer = kafka.client_config().create().unwrap();
        Self { db, kafka, topic, dead_letters, producer }
    }

    fn settings(&self, group: &str) -> Settings {
        let mut consumer = self.kafka.client_config();
        consumer.set("group.id", self.kafka.name(group)).set("auto.offset.reset", "earliest");
        Settings {
            name: "recorder".into(),
            topic: self.topic.clone(),
            dead_letter_topic: self.dead_letters.clone(),
            max_batch: 50,
            max_wait: Duration::from_millis(20),
            consumer,
            producer: self.kafka.client_config(),
        }
    }

    fn pool(&self) -> Pool {
        self.db.pool().clone()
    }

    async fn produce(&self, partition: i32, payloads: impl IntoIterator<Item = String>) {
        for payload in payloads {
            self.producer
                .send(
                    FutureRecord::to(&self.topic).partition(partition).key("k").payload(&payload),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
    }

    async fn scalar(&self, sql: &str) -> i64 {
        self.db.pool().get().await.unwrap().query_one(sql, &[]).await.unwrap().get(0)
    }

    async fn wait_for_seen(&self, count: i64) {
        for _ in 0..600 {
            if self.scalar("SELECT count(*) FROM seen").await >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{count} records were not applied in time");
    }
}

fn payloads(prefix: &str, n: usize) -> impl Iterator<Item = String> + '_ {
    (0..n).map(move |i| format!("{prefix}-{i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_record_applies_once_and_kafka_offsets_are_not_trusted() {
    let world = World::new(3).await;
    for partition in 0..3 {
        world.produce(partition, payloads(&format!("a{partition}"), 40)).await;
    }
    world.produce(1, ["poison".to_string()]).await;

    let token = CancellationToken::new();
    let first = Projection::subscribe(world.settings("first"), world.pool(), Recorder).unwrap();
    let running = tokio::spawn(first.run(token.clone()));
    world.wait_for_seen(120).await;
    token.cancel();
    running.await.unwrap().unwrap();

    // A group that never committed starts at the beginning of the topic: the stored
    // positions, not Kafka's, decide where it resumes.
    for partition in 0..3 {
        world.produce(partition, payloads(&format!("b{partition}"), 10)).await;
    }
    let token = CancellationToken::new();
    let second = Projection::subscribe(world.settings("second"), world.pool(), Recorder).unwrap();
    let running = tokio::spawn(second.run(token.clone()));
    world.wait_for_seen(150).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    token.cancel();
    running.await.unwrap().unwrap();

    assert_eq!(world.scalar("SELECT count(*) FROM seen").await, 150);
    assert_eq!(world.scalar("SELECT n FROM applications").await, 150, "a record was applied twice");
    assert_eq!(world.scalar("SELECT sum(next_offset)::bigint FROM consumer_positions").await, 151);

    let reader: StreamConsumer = world.kafka.consumer_from_start(&world.dead_letters, 1);
    let message = tokio::time::timeout(Duration::from_secs(10), reader.recv()).await.unwrap().unwrap();
    assert_eq!(message.payload(), Some(&b"poison"[..]));
    let headers = message.headers().unwrap();
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).to_string())
    };
    assert_eq!(header("dlq.reason").as_deref(), Some("poisoned"));
    assert_eq!(header("dlq.origin.topic").as_deref(), Some(world.topic.as_str()));
    assert_eq!(header("dlq.origin.partition").as_deref(), Some("1"));
    assert_eq!(header("dlq.origin.offset").as_deref(), Some("40"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigned_projection_stops_exactly_at_targets_then_runs_to_the_end() {
    let world = World::new(2).await;
    world.produce(0, payloads("p0", 30)).await;
    world.produce(1, payloads("p1", 20)).await;
    let token = CancellationToken::new();
    let mut projection = Projection::assign_all(world.settings("all"), world.pool(), Recorder).await.unwrap();

    let targets = BTreeMap::from([(0, 10), (1, 5)]);
    assert!(projection.run_to(&targets, &token).await.unwrap());
    assert_eq!(projection.positions(), BTreeMap::from([(0, Some(10)), (1, Some(5))]));
    assert_eq!(world.scalar("SELECT count(*) FROM seen").await, 15);

    assert!(projection.run_to_end(&token).await.unwrap());
    assert_eq!(projection.positions(), BTreeMap::from([(0, Some(30)), (1, Some(20))]));
    assert_eq!(world.scalar("SELECT n FROM applications").await, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_moved_by_another_writer_is_followed() {
    let world = World::new(1).await;
    world.produce(0, payloads("x", 20)).await;
    let token = CancellationToken::new();
    let mut projection =
        Projection::assign_all(world.settings("moved"), world.pool(), Recorder).await.unwrap();
    assert!(projection.run_to_end(&token).await.unwrap());

    // Another writer (a rebuilt read model swapped in) says: applied up to offset 5 only.
    let client = world.db.pool().get().await.unwrap();
    client
        .batch_execute(
            "DELETE FROM seen WHERE \"offset\" >= 5; UPDATE applications SET n = 5;
             UPDATE consumer_positions SET next_offset = 5;",
        )
        .await
        .unwrap();
    world.produce(0, payloads("y", 1)).await;
    assert!(projection.run_to(&BTreeMap::from([(0, 21)]), &token).await.unwrap());
    assert_eq!(world.scalar("SELECT count(*) FROM seen").await, 21);
    assert_eq!(world.scalar("SELECT n FROM applications").await, 21);
}

/// The loop runs on the caller's runtime: nothing it does may hold the thread (a
/// single-threaded runtime shows it: a ticker on the same thread measures the stalls).
#[tokio::test(flavor = "current_thread")]
async fn the_loop_never_blocks_the_runtimes_thread() {
    let world = World::new(6).await;
    for partition in 0..6 {
        world.produce(partition, payloads(&format!("t{partition}"), 20)).await;
    }
    let token = CancellationToken::new();
    let projection = Projection::subscribe(world.settings("ticker"), world.pool(), Recorder).unwrap();
    let running = tokio::spawn(projection.run(token.clone()));

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut longest = Duration::ZERO;
    let mut last = std::time::Instant::now();
    let mut ticks = 0u32;
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        longest = longest.max(last.elapsed());
        last = std::time::Instant::now();
        ticks += 1;
        if ticks.is_multiple_of(20) && world.scalar("SELECT count(*) FROM seen").await >= 120 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the records were not applied in time");
    }
    token.cancel();
    running.await.unwrap().unwrap();
    assert!(longest < Duration::from_millis(400), "the runtime's thread was held for {longest:?}");
}
