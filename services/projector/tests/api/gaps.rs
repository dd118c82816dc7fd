//! Events after a version gap wait (parked in the read model's database) and apply when
//! the missing version arrives; the gap is visible while it is open; parked events
//! survive a restart and a rebuild.

use crate::helpers::{ChildApp, Fate, Produced, TestApp, World, at, interleave, order_events, problem};

fn records(events: &[&orders_domain::OrderEvent]) -> Vec<Produced> {
    interleave(&[events.iter().map(|e| (*e).clone()).collect()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_after_a_gap_wait_visibly_and_apply_when_it_closes() {
    let mut world = World::new().await;
    // early: v2 before v1. gapped: v1 then v3; v2 comes later. shuffled: v1, v3, v2.
    let early = order_events("gap-user", 1, Fate::Paid, at(0));
    let gapped = order_events("gap-user", 2, Fate::Shipped, at(1));
    let shuffled = order_events("gap-user", 3, Fate::Shipped, at(2));
    let (early_id, gapped_id, shuffled_id) = (early[0].order_id, gapped[0].order_id, shuffled[0].order_id);
    world.produce(&records(&[&early[1], &gapped[0], &gapped[2], &shuffled[0], &shuffled[2]])).await;
    world.produce(&records(&[&shuffled[1]])).await;
    // A process of its own: the gauges are process-wide.
    let app = ChildApp::spawn(&world, "gaps", &[]).await;
    world.wait_caught_up().await;

    // v1, v3, v2: every event applied.
    let view = app.json(&format!("/queries/orders/{shuffled_id}")).await;
    assert_eq!((&view["version"], &view["status"]), (&3.into(), &"shipped".into()), "{view}");
    assert!(view.get("missing_version").is_none() && view.get("parked_versions").is_none(), "{view}");

    // While the gaps are open, they show in the answers and in the gauges.
    let view = app.json(&format!("/queries/orders/{gapped_id}")).await;
    assert_eq!((&view["version"], &view["status"]), (&1.into(), &"pending".into()), "{view}");
    assert_eq!(view["missing_version"], 2, "{view}");
    assert_eq!(view["parked_versions"], serde_json::json!([3]), "{view}");
    let response = app.get(&format!("/queries/orders/{early_id}")).await;
    assert_eq!(response.headers()["retry-after"], "1");
    let body = problem(response, 404).await;
    assert_eq!(body["type"], "/problems/missing-events", "{body}");
    assert_eq!((&body["missing_version"], &body["parked_versions"]), (&1.into(), &serde_json::json!([2])));
    app.wait_for_metric("projector_parked_events", 2.0).await;
    app.wait_for_metric("projector_orders_with_gaps", 2.0).await;
    assert!(app.metrics().await.contains("projector_version_gaps_total"));
    assert_eq!(world.scalar("SELECT count(*) FROM read_model.parked_events").await, 2);

    // The missing versions arrive: every waiting event applies, nothing waits any more.
    world.produce(&records(&[&early[0], &gapped[1]])).await;
    world.wait_caught_up().await;
    let view = app.json(&format!("/queries/orders/{early_id}")).await;
    assert_eq!((&view["version"], &view["status"]), (&2.into(), &"paid".into()), "{view}");
    let types: Vec<&str> =
        view["history"].as_array().unwrap().iter().map(|h| h["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["OrderCreated", "OrderPaid"]);
    assert!(view.get("missing_version").is_none(), "{view}");
    let view = app.json(&format!("/queries/orders/{gapped_id}")).await;
    assert_eq!((&view["version"], &view["status"]), (&3.into(), &"shipped".into()), "{view}");
    assert!(view.get("missing_version").is_none() && view.get("parked_versions").is_none(), "{view}");
    let stats = app.json("/queries/users/gap-user/stats").await;
    assert_eq!(
        stats["orders_by_status"],
        serde_json::json!({"pending": 0, "paid": 1, "shipped": 2, "cancelled": 0})
    );
    assert_eq!(stats["spent"][0]["total_spent_minor"], 500 + 1000 + 1500, "{stats}");
    app.wait_for_metric("projector_parked_events", 0.0).await;
    app.wait_for_metric("projector_orders_with_gaps", 0.0).await;
    assert_eq!(world.scalar("SELECT count(*) FROM read_model.parked_events").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_events_survive_a_restart() {
    let mut world = World::new().await;
    let events = order_events("restart-user", 1, Fate::Shipped, at(0));
    let early = order_events("restart-user", 1, Fate::Paid, at(1));
    world.produce(&records(&[&events[0], &events[2], &early[1]])).await;
    let app = TestApp::spawn(&world, "before", &[]).await;
    world.wait_caught_up().await;
    let view = app.json(&format!("/queries/orders/{}", events[0].order_id)).await;
    assert_eq!(view["missing_version"], 2, "{view}");
    app.stop().await;

    world.produce(&records(&[&events[1], &early[0]])).await;
    let app = TestApp::spawn(&world, "after", &[]).await;
    world.wait_caught_up().await;
    let view = app.json(&format!("/queries/orders/{}", events[0].order_id)).await;
    assert_eq!((&view["version"], &view["status"]), (&3.into(), &"shipped".into()), "{view}");
    assert!(view.get("missing_version").is_none(), "{view}");
    let view = app.json(&format!("/queries/orders/{}", early[0].order_id)).await;
    assert_eq!((&view["version"], &view["status"]), (&2.into(), &"paid".into()), "{view}");
}
