//! A writer with an outbox of its own (no event store): `migrate` creates the tables,
//! `write` inserts rows inside the writer's transaction, and the relay publishes them.

use std::{collections::BTreeMap, time::Duration};

use orders_outbox::{OutboxMessage, Relay};
use orders_testkit::{kafka::TestKafka, postgres::TestDatabase};
use rdkafka::{ClientConfig, Message as _};

use crate::helpers::{Running, World};

#[tokio::test]
async fn an_outbox_of_its_own_is_created_written_in_a_transaction_and_published() {
    let db = TestDatabase::create().await;
    orders_outbox::migrate(db.pool()).await.unwrap();
    orders_outbox::migrate(db.pool()).await.unwrap(); // a second run changes nothing
    let mut kafka = TestKafka::new().await;
    let topic = kafka.topic("commands", 2).await;
    let message = |key: &str, value: &str| OutboxMessage {
        topic: topic.clone(),
        key: key.as_bytes().to_vec(),
        payload: value.as_bytes().to_vec(),
        headers: BTreeMap::from([("kind".to_string(), "test".to_string())]),
    };
    let (a1, a2, b1) = (message("a", "a1"), message("a", "a2"), message("b", "b1"));
    {
        let mut client = db.pool().get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        orders_outbox::write(&tx, &[&message("c", "rolled back")]).await.unwrap();
        drop(tx); // rolled back: never published
        let tx = client.transaction().await.unwrap();
        orders_outbox::write(&tx, &[&a1, &a2, &b1]).await.unwrap();
        tx.commit().await.unwrap();
    }
    let session = db.url().parse::<orders_postgres::DatabaseUrl>().unwrap().target().unwrap();
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", orders_testkit::kafka::bootstrap_servers());
    let relay =
        Relay::new(orders_testkit::postgres::pool(db.url(), 4), session, &config, World::options()).unwrap();
    let relay = Running::start(relay);
    let reader = kafka.consumer_from_start(&topic, 2);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(60), reader.recv())
            .await
            .expect("three records within a minute")
            .unwrap();
        seen.push(String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned());
    }
    relay.stop(Duration::from_secs(30)).await;
    let of_a: Vec<&String> = seen.iter().filter(|v| v.starts_with('a')).collect();
    assert_eq!(of_a, ["a1", "a2"], "in order per key: {seen:?}");
    assert!(seen.contains(&"b1".to_string()) && !seen.iter().any(|v| v == "rolled back"), "{seen:?}");
}

/// On a database the event store migrated, the outbox migration finds its tables and
/// leaves them as they are.
#[tokio::test]
async fn migrating_the_outbox_of_an_event_store_changes_nothing() {
    let world = World::new().await;
    orders_outbox::migrate(world.db.pool()).await.unwrap();
    let client = world.db.pool().get().await.unwrap();
    let tables: i64 = client
        .query_one("SELECT count(*) FROM pg_tables WHERE tablename IN ('outbox', 'outbox_quarantine')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 2);
}
