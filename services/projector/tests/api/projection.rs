//! Exactly-once effect: duplicated and re-delivered events change nothing, bad records
//! are dead-lettered (version gaps: see `gaps.rs`).

use uuid::Uuid;

use crate::helpers::{Expected, Produced, TestApp, World, interleave, workload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicated_and_redelivered_events_give_the_views_of_the_unique_events() {
    let mut world = World::new().await;
    let orders = workload(40, 6);
    let unique = interleave(&orders);

    // Every third event published twice in a row (a producer retry), then a stretch of
    // the stream published again later (a relay that re-sent a whole batch after a crash).
    let mut stream = Vec::new();
    for (i, record) in unique.iter().enumerate() {
        stream.push(record.clone());
        if i % 3 == 0 {
            stream.push(record.clone());
        }
    }
    stream.extend(unique[10..60].iter().cloned());
    let garbage_key = Uuid::now_v7();
    stream.insert(25, Produced::garbage(&garbage_key.to_string()));
    stream.insert(70, Produced::unknown(Uuid::now_v7()));
    world.produce(&stream).await;

    let app = TestApp::spawn(&world, "first", &[]).await;
    world.wait_caught_up().await;
    Expected::new(&orders).check(&app.api()).await;
    let metrics = app.metrics().await;
    assert!(metrics.contains("projector_duplicate_events_total"), "{metrics}");
    assert!(metrics.contains("projection_consumer_lag{"), "{metrics}");
    assert!(metrics.contains("projection_apply_latency_seconds"), "{metrics}");
    assert!(metrics.contains("projection_events_applied_per_second"), "{metrics}");

    let dead = world.dead_letters(2).await;
    let garbage =
        dead.iter().find(|(value, _)| *value == stream[25].value).expect("the garbage is dead-lettered");
    assert!(garbage.1["dlq.reason"].starts_with("undecodable event"), "{:?}", garbage.1);
    assert_eq!(garbage.1["dlq.origin.topic"], world.topic);
    assert_eq!(garbage.1["dlq.projection"], "order-views");
    // The processor dead-letters to the same topic: this says whose dead letter it is.
    assert_eq!(garbage.1["dlq.consumer"], world.kafka.name("first"));
    let unknown = dead
        .iter()
        .find(|(value, _)| *value == stream[70].value)
        .expect("the unknown event is dead-lettered");
    assert!(unknown.1["dlq.reason"].contains("no payload that this reader knows"), "{:?}", unknown.1);
    let before = world.dump().await;
    app.stop().await;

    // Re-delivered by Kafka: a consumer group that never committed reads the topic from
    // the beginning; the stored positions make it resume where the read model is.
    let more = workload(5, 6);
    world.produce(&interleave(&more)).await;
    let app = TestApp::spawn(&world, "second", &[]).await;
    world.wait_caught_up().await;
    let all: Vec<_> = orders.iter().chain(&more).cloned().collect();
    Expected::new(&all).check(&app.api()).await;
    let after = world.dump().await;
    let unchanged = before.iter().filter(|row| after.contains(row)).count();
    assert!(unchanged >= 40, "the views of the first orders changed when re-delivered");
}
