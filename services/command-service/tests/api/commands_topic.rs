//! Commands from `order-commands`: applied once per command id, refusals recorded,
//! undecodable messages dead-lettered.

use std::time::Duration;

use orders_domain::{CancelOrder, CancelReason, OrderId};
use orders_events::{CommandMessage, CommandMetadata, OrderCommand, encode_command};
use rdkafka::{
    Message,
    consumer::{Consumer, StreamConsumer},
    message::Headers,
    producer::{FutureProducer, FutureRecord},
};
use uuid::Uuid;

use crate::helpers::{TestApp, event_types, spawn_app, spawn_app_with, wait_until};

async fn produce(app: &TestApp, key: &str, payload: &[u8]) {
    let producer: FutureProducer = app.kafka.client_config().create().unwrap();
    producer
        .send(FutureRecord::to(&app.commands_topic).key(key).payload(payload), Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

fn cancel(order_id: &str, command_id: Uuid) -> Vec<u8> {
    encode_command(&CommandMessage {
        metadata: CommandMetadata { command_id, correlation_id: Uuid::now_v7(), causation_id: None },
        order_id: OrderId::from_uuid(Uuid::parse_str(order_id).unwrap()),
        expected_version: None,
        command: OrderCommand::Cancel(CancelOrder::new(CancelReason::new("out of stock").unwrap())),
    })
}

async fn wait_for_events(app: &TestApp, order_id: &str, count: usize) -> Vec<serde_json::Value> {
    for _ in 0..300 {
        let events = app.events(order_id).await;
        if events.len() >= count {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("order {order_id} did not reach {count} events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_is_applied_once_even_when_delivered_twice() {
    let app = spawn_app().await;
    let id = app.create_order().await;
    let command_id = Uuid::now_v7();
    let bytes = cancel(&id, command_id);
    produce(&app, &id, &bytes).await;
    produce(&app, &id, &bytes).await;
    let events = wait_for_events(&app, &id, 2).await;
    assert_eq!(event_types(&events), ["OrderCreated", "OrderCancelled"]);
    assert_eq!(events[1]["causation_id"], command_id.to_string());

    // A later command proves both copies were consumed: still one cancellation.
    let marker = app.create_order().await;
    produce(&app, &marker, &cancel(&marker, Uuid::now_v7())).await;
    wait_for_events(&app, &marker, 2).await;
    assert_eq!(app.events(&id).await.len(), 2);
    let recorded = app
        .count(&format!("SELECT count(*) FROM idempotency_records WHERE key = 'command:{command_id}'"))
        .await;
    assert_eq!(recorded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_command_is_recorded_and_skipped() {
    let app = spawn_app().await;
    let id = app.create_order().await;
    let first = Uuid::now_v7();
    let second = Uuid::now_v7();
    produce(&app, &id, &cancel(&id, first)).await;
    produce(&app, &id, &cancel(&id, second)).await;
    wait_for_events(&app, &id, 2).await;
    for _ in 0..100 {
        let recorded = app
            .count(&format!(
                "SELECT count(*) FROM idempotency_records WHERE key = 'command:{second}' AND status = 409"
            ))
            .await;
        if recorded == 1 {
            assert_eq!(app.events(&id).await.len(), 2);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the second cancel was not recorded as refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_command_goes_to_the_dead_letter_topic_with_its_reason() {
    let app = spawn_app().await;
    produce(&app, "some-key", b"\xff\xff not protobuf").await;
    let consumer: StreamConsumer = app
        .kafka
        .client_config()
        .set("group.id", app.kafka.name("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&app.dead_letter_topic]).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await.unwrap().unwrap();
    assert_eq!(message.payload(), Some(&b"\xff\xff not protobuf"[..]));
    assert_eq!(message.key(), Some(&b"some-key"[..]));
    let headers = message.headers().unwrap();
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert!(header("dlq.reason").unwrap().starts_with("undecodable command: "), "{:?}", header("dlq.reason"));
    assert_eq!(header("dlq.origin.topic").as_deref(), Some(app.commands_topic.as_str()));
    // The consumer went on: a valid command after the poison is applied.
    let id = app.create_order().await;
    produce(&app, &id, &cancel(&id, Uuid::now_v7())).await;
    wait_for_events(&app, &id, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_loses_its_races_is_retried_not_recorded_as_refused() {
    // No re-run after a lost race: one lost race is `Contention`, a transient outcome.
    let app = spawn_app_with(&["--snapshot-every", "2", "--max-retries", "0"]).await;
    let id = app.create_order().await;
    // A pay over HTTP takes version 2 and waits, uncommitted, on the test's snapshot row.
    let blocker = app.hold_snapshot_of(&id).await;
    let pay = tokio::spawn(
        app.http
            .post(app.url(&format!("/commands/orders/{id}/pay")))
            .json(&serde_json::json!({"payment_id": "p-1", "amount_minor": 1000}))
            .send(),
    );
    wait_until("the pay waits in its transaction", || async { app.lock_waiters().await >= 1 }).await;
    // The cancel from Kafka runs on version 1 and waits on the pay's version 2.
    let command_id = Uuid::now_v7();
    produce(&app, &id, &cancel(&id, command_id)).await;
    wait_until("the cancel waits on the pay", || async { app.lock_waiters().await >= 2 }).await;
    blocker.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(pay.await.unwrap().unwrap().status(), 200);

    // The cancel lost its race; retried on the new state, it applies (a paid order
    // can be cancelled), instead of being recorded as refused and dropped.
    let events = wait_for_events(&app, &id, 3).await;
    assert_eq!(event_types(&events), ["OrderCreated", "OrderPaid", "OrderCancelled"]);
    let key = format!("command:{command_id}");
    let refused = app
        .count(&format!("SELECT count(*) FROM idempotency_records WHERE key = '{key}' AND status = 409"))
        .await;
    assert_eq!(refused, 0, "a lost race is not a refusal");
}

/// Commands of different orders waiting on the topic are applied at once, their
/// appends sharing the event store's group commits (4 committers): with the events
/// table locked, the commands produced meanwhile queue up, and once it is free the 30
/// cancellations commit in fewer transactions than there are orders (one at a time,
/// each had a transaction of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_of_different_orders_are_applied_at_once() {
    const ORDERS: usize = 30;
    let app = spawn_app().await;
    let mut orders = Vec::new();
    for _ in 0..ORDERS {
        orders.push(app.create_order().await);
    }
    let mut holder = orders_testkit::postgres::connect(app.db.url()).await;
    let hold = holder.transaction().await.unwrap();
    hold.batch_execute("LOCK TABLE events IN EXCLUSIVE MODE").await.unwrap();
    let producer: FutureProducer = app.kafka.client_config().create().unwrap();
    let commands: Vec<(&String, Vec<u8>)> =
        orders.iter().map(|order| (order, cancel(order, Uuid::now_v7()))).collect();
    let sends = commands.iter().map(|(order, bytes)| {
        producer.send(
            FutureRecord::to(&app.commands_topic).key(order.as_str()).payload(bytes),
            Duration::from_secs(10),
        )
    });
    for sent in futures::future::join_all(sends).await {
        sent.map_err(|(e, _)| e).unwrap();
    }
    wait_until("an append waits for the events table", || async {
        app.count(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .await
            >= 1
    })
    .await;
    hold.commit().await.unwrap();
    for order in &orders {
        wait_for_events(&app, order, 2).await;
    }
    let transactions =
        app.count("SELECT count(DISTINCT recorded_at) FROM events WHERE event_type = 'OrderCancelled'").await;
    assert!(transactions < ORDERS as i64, "{ORDERS} cancellations in {transactions} transactions");
}
