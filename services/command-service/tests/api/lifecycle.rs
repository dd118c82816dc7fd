//! The life of an order over HTTP, and the outbox it leaves behind.

use serde_json::json;

use crate::helpers::{event_types, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_created_paid_and_shipped_and_its_history_tells_it() {
    let app = spawn_app().await;
    let id = app.create_order().await;

    let paid = app
        .post(&format!("/commands/orders/{id}/pay"), &json!({"payment_id": "pay-1", "amount_minor": 1000}))
        .await;
    assert_eq!(paid.status(), 200);
    let paid: serde_json::Value = paid.json().await.unwrap();
    assert_eq!(paid, json!({"order_id": id, "version": 2, "status": "paid"}));

    let shipped = app
        .post(
            &format!("/commands/orders/{id}/ship"),
            &json!({"shipment_id": "shp-1", "tracking_number": "TRK-1"}),
        )
        .await;
    assert_eq!(shipped.status(), 200);
    let shipped: serde_json::Value = shipped.json().await.unwrap();
    assert_eq!(shipped["version"], 3);
    assert_eq!(shipped["status"], "shipped");

    let events = app.events(&id).await;
    assert_eq!(event_types(&events), ["OrderCreated", "OrderPaid", "OrderShipped"]);
    assert_eq!(events.iter().map(|e| e["version"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(events[0]["payload"]["total_minor"], 1000);
    assert_eq!(events[2]["payload"]["tracking_number"], "TRK-1");

    // One outbox row per committed event, in version order, with its type in the headers.
    let client = app.db.pool().get().await.unwrap();
    let rows = client.query("SELECT key, headers FROM outbox ORDER BY id", &[]).await.unwrap();
    let types: Vec<String> = rows
        .iter()
        .map(|r| r.get::<_, serde_json::Value>(1)["event_type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(types, ["OrderCreated", "OrderPaid", "OrderShipped"]);
    assert!(rows.iter().all(|r| r.get::<_, Vec<u8>>(0) == id.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_can_be_cancelled_while_pending() {
    let app = spawn_app().await;
    let id = app.create_order().await;
    let cancelled =
        app.post(&format!("/commands/orders/{id}/cancel"), &json!({"reason": "changed my mind"})).await;
    assert_eq!(cancelled.status(), 200);
    assert_eq!(event_types(&app.events(&id).await), ["OrderCreated", "OrderCancelled"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_match_applies_only_at_the_given_version() {
    let app = spawn_app().await;
    let id = app.create_order().await;
    let at = |version: &str| {
        app.http
            .post(app.url(&format!("/commands/orders/{id}/cancel")))
            .header("If-Match", version.to_string())
            .json(&json!({"reason": "r"}))
    };
    let stale = at("\"2\"").send().await.unwrap();
    let body = crate::helpers::problem(stale, 409).await;
    assert_eq!(body["detail"], "the order is at version 1, not 2");
    let current = at("1").send().await.unwrap();
    assert_eq!(current.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_on_one_order_are_applied_once_each_or_refused() {
    let app = spawn_app().await;
    let id = app.create_order().await;
    // 16 clients try to cancel the same order at once: exactly one wins, the others
    // are told the rule (a cancelled order cannot be cancelled), none is lost silently.
    let attempts = (0..16).map(|i| {
        let request = app
            .http
            .post(app.url(&format!("/commands/orders/{id}/cancel")))
            .json(&json!({"reason": format!("reason {i}")}));
        async move { request.send().await.unwrap().status().as_u16() }
    });
    let mut statuses = futures::future::join_all(attempts).await;
    statuses.sort_unstable();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 409), "{statuses:?}");
    assert_eq!(event_types(&app.events(&id).await), ["OrderCreated", "OrderCancelled"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_written_and_loading_from_them_gives_the_same_answers() {
    let app = crate::helpers::spawn_app_with(&["--snapshot-every", "2"]).await;
    let id = app.create_order().await;
    let paid = app
        .post(&format!("/commands/orders/{id}/pay"), &json!({"payment_id": "p", "amount_minor": 1000}))
        .await;
    assert_eq!(paid.status(), 200);
    assert_eq!(app.count("SELECT count(*) FROM snapshots WHERE version = 2").await, 1);
    // The next command loads from the snapshot: the rules still see a paid order.
    let repaid = app
        .post(&format!("/commands/orders/{id}/pay"), &json!({"payment_id": "p", "amount_minor": 1000}))
        .await;
    let body = crate::helpers::problem(repaid, 409).await;
    assert_eq!(body["detail"], "only a pending order can be paid; this one is paid");
    let shipped = app
        .post(&format!("/commands/orders/{id}/ship"), &json!({"shipment_id": "s", "tracking_number": "t"}))
        .await;
    assert_eq!(shipped.status(), 200);
}
