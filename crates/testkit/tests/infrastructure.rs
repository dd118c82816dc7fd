//! The local infrastructure does what the platform relies on: an idempotent producer
//! and a consumer group with manual commits, Kafka transactions seen through
//! `read_committed`, and a per-test PostgreSQL database.
#![allow(clippy::unwrap_used)]

use std::{collections::HashMap, time::Duration};

use orders_testkit::{kafka::TestKafka, postgres::TestDatabase};
use rdkafka::{
    ClientConfig, Message, Offset,
    consumer::{CommitMode, Consumer, StreamConsumer},
    producer::{FutureProducer, FutureRecord, Producer},
};

const WAIT: Duration = Duration::from_secs(30);

fn consumer(kafka: &TestKafka, group: &str, isolation: &str) -> StreamConsumer {
    let mut config: ClientConfig = kafka.client_config();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", isolation);
    config.create().unwrap()
}

/// Reads values until `stop` says so, or fails after [`WAIT`].
async fn read_until(
    consumer: &StreamConsumer,
    mut stop: impl FnMut(&[(String, String)]) -> bool,
) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !stop(&seen) {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out; read so far: {seen:?}"))
            .unwrap();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        let value = String::from_utf8(message.payload().unwrap().to_vec()).unwrap();
        seen.push((key, value));
    }
    seen
}

#[tokio::test]
async fn idempotent_producer_and_manual_commit_round_trip() {
    let mut kafka = TestKafka::new().await;
    let topic = kafka.topic("round-trip", 3).await;
    let producer: FutureProducer =
        kafka.client_config().set("enable.idempotence", "true").set("acks", "all").create().unwrap();
    let keys = ["order-a", "order-b", "order-c", "order-d"];
    for i in 0..100 {
        let key = keys[i % keys.len()];
        let value = format!("{key}:{i}");
        producer
            .send(FutureRecord::to(&topic).key(key).payload(&value), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    let group = kafka.name("round-trip-group");
    let first = consumer(&kafka, &group, "read_committed");
    first.subscribe(&[&topic]).unwrap();
    let seen = read_until(&first, |seen| seen.len() == 100).await;

    // Per key, messages arrive in the order they were produced.
    let mut per_key: HashMap<&str, Vec<usize>> = HashMap::new();
    for (key, value) in &seen {
        let i: usize = value.rsplit_once(':').unwrap().1.parse().unwrap();
        per_key.entry(keys.iter().find(|k| *k == key).unwrap()).or_default().push(i);
    }
    for (key, indexes) in &per_key {
        let mut sorted = indexes.clone();
        sorted.sort_unstable();
        assert_eq!(indexes, &sorted, "{key} out of order");
        assert_eq!(indexes.len(), 25);
    }

    // Commit by hand; a new member of the group starts after everything read.
    first.commit_consumer_state(CommitMode::Sync).unwrap();
    let committed = first.committed(Duration::from_secs(10)).unwrap();
    let mut total = 0;
    for element in committed.elements() {
        let (_, high) = first.fetch_watermarks(&topic, element.partition(), Duration::from_secs(10)).unwrap();
        // A partition that no key hashed to has nothing to commit.
        let offset = match element.offset() {
            Offset::Offset(offset) => offset,
            _ => 0,
        };
        assert_eq!(offset, high, "partition {} committed below its end", element.partition());
        total += offset;
    }
    assert_eq!(total, 100);
    // The partition list refers to the consumer's partitions: release it before the
    // consumer, or closing the consumer waits for it forever.
    drop(committed);
    drop(first);

    producer
        .send(FutureRecord::to(&topic).key("order-a").payload("after-commit"), Duration::from_secs(10))
        .await
        .unwrap();
    let second = consumer(&kafka, &group, "read_committed");
    second.subscribe(&[&topic]).unwrap();
    let seen = read_until(&second, |seen| !seen.is_empty()).await;
    assert_eq!(seen, vec![("order-a".to_string(), "after-commit".to_string())]);
}

#[tokio::test]
async fn aborted_transactions_are_invisible_to_read_committed_consumers() {
    let mut kafka = TestKafka::new().await;
    let topic = kafka.topic("transactions", 1).await;
    let producer: FutureProducer = kafka
        .client_config()
        .set("transactional.id", kafka.name("tx-producer"))
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();

    let send_in_transaction = async |values: &[&str], commit: bool| {
        producer.begin_transaction().unwrap();
        for value in values {
            producer
                .send(FutureRecord::to(&topic).key("k").payload(*value), Duration::from_secs(10))
                .await
                .map_err(|(e, _)| e)
                .unwrap();
        }
        if commit {
            producer.commit_transaction(Duration::from_secs(30)).unwrap();
        } else {
            producer.abort_transaction(Duration::from_secs(30)).unwrap();
        }
    };
    send_in_transaction(&["committed-1", "committed-2"], true).await;
    send_in_transaction(&["aborted-1", "aborted-2"], false).await;
    send_in_transaction(&["committed-3"], true).await;

    let values = |seen: Vec<(String, String)>| seen.into_iter().map(|(_, v)| v).collect::<Vec<_>>();
    let committed_only = consumer(&kafka, &kafka.name("rc"), "read_committed");
    committed_only.subscribe(&[&topic]).unwrap();
    let seen = read_until(&committed_only, |s| s.iter().any(|(_, v)| v == "committed-3")).await;
    assert_eq!(values(seen), ["committed-1", "committed-2", "committed-3"]);

    // The aborted records were written: a read_uncommitted consumer sees them.
    let everything = consumer(&kafka, &kafka.name("ru"), "read_uncommitted");
    everything.subscribe(&[&topic]).unwrap();
    let seen = read_until(&everything, |s| s.iter().any(|(_, v)| v == "committed-3")).await;
    assert_eq!(values(seen), ["committed-1", "committed-2", "aborted-1", "aborted-2", "committed-3"]);

    // And the partition's positions were all used, markers included.
    let (_, high) = everything.fetch_watermarks(&topic, 0, Duration::from_secs(10)).unwrap();
    assert!(high >= 8, "5 records and 3 transaction markers, high watermark {high}");
}

#[tokio::test]
async fn each_test_gets_its_own_postgres_database() {
    let first = TestDatabase::create().await;
    let second = TestDatabase::create().await;
    assert_ne!(first.name(), second.name());

    let client = first.pool().get().await.unwrap();
    client.batch_execute("CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)").await.unwrap();
    let inserted = client.execute("INSERT INTO notes VALUES ($1, $2)", &[&7_i64, &"hello"]).await.unwrap();
    assert_eq!(inserted, 1);
    let row = client
        .query_one("SELECT body, current_database() FROM notes WHERE id = $1", &[&7_i64])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "hello");
    assert_eq!(row.get::<_, String>(1), first.name());

    // The other database does not see the table.
    let other = second.pool().get().await.unwrap();
    let missing = other.query("SELECT 1 FROM notes", &[]).await.unwrap_err();
    assert_eq!(missing.code(), Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE), "{missing:?}");

    let name = first.name().to_string();
    drop(client);
    drop(first);
    let admin = orders_testkit::postgres::connect(&orders_testkit::postgres::admin_url()).await;
    let rows = admin.query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await.unwrap();
    assert!(rows.is_empty(), "a dropped test database must be gone");
}
