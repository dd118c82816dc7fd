//! Every kind of bad request gets its problem+json answer, and writes nothing.

use serde_json::json;

use crate::helpers::{TestApp, problem, spawn_app};

async fn nothing_written(app: &TestApp, events_before: i64) {
    assert_eq!(
        app.count("SELECT count(*) FROM events").await,
        events_before,
        "a rejected command wrote events"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox").await,
        events_before,
        "a rejected command wrote outbox rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let body = problem(app.post_raw("/commands/orders", "{\"user_id\": ").await, 400).await;
    assert_eq!(body["type"], "/problems/malformed-body");
    assert!(body["detail"].as_str().unwrap().starts_with("invalid JSON body: EOF"), "{body}");
    nothing_written(&app, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_type_is_400_naming_the_field() {
    let app = spawn_app().await;
    let raw = r#"{"user_id": "u", "currency": "EUR", "items": [{"sku": "A", "quantity": "two", "unit_price_minor": 1}]}"#;
    let body = problem(app.post_raw("/commands/orders", raw).await, 400).await;
    assert_eq!(body["field"], "items[0].quantity");
    assert!(
        body["detail"].as_str().unwrap().contains("invalid type: string \"two\", expected i64"),
        "{body}"
    );
    nothing_written(&app, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_field_is_400_naming_it() {
    let app = spawn_app().await;
    let body = problem(app.post("/commands/orders", &json!({"user_id": "u", "items": []})).await, 400).await;
    assert_eq!(body["field"], "currency");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_value_is_400_naming_the_field_and_the_rule() {
    let app = spawn_app().await;
    let order = json!({"user_id": "u", "currency": "EUR", "items": [
        {"sku": "A", "quantity": 1, "unit_price_minor": 1},
        {"sku": "B", "quantity": 0, "unit_price_minor": 1}
    ]});
    let body = problem(app.post("/commands/orders", &order).await, 400).await;
    assert_eq!(body["type"], "/problems/invalid-input");
    assert_eq!(body["field"], "items[1].quantity");
    assert_eq!(body["detail"], "items[1].quantity: must be greater than zero, got 0");

    let no_items = json!({"user_id": "u", "currency": "EUR", "items": []});
    let body = problem(app.post("/commands/orders", &no_items).await, 400).await;
    assert_eq!(body["detail"], "items: an order needs at least one line item");

    let bad_currency = json!({"user_id": "u", "currency": "euro", "items": [{"sku": "A", "quantity": 1, "unit_price_minor": 1}]});
    let body = problem(app.post("/commands/orders", &bad_currency).await, 400).await;
    assert_eq!(body["field"], "currency");
    nothing_written(&app, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_order_is_404_and_a_bad_id_is_400() {
    let app = spawn_app().await;
    let unknown = uuid::Uuid::now_v7();
    let body =
        problem(app.post(&format!("/commands/orders/{unknown}/cancel"), &json!({"reason": "r"})).await, 404)
            .await;
    assert_eq!(body["detail"], format!("order {unknown} does not exist"));
    let history = app.http.get(app.url(&format!("/orders/{unknown}/events"))).send().await.unwrap();
    problem(history, 404).await;

    let body =
        problem(app.post("/commands/orders/not-a-uuid/cancel", &json!({"reason": "r"})).await, 400).await;
    assert_eq!(body["field"], "id");
    let body = problem(app.http.get(app.url("/no/such/route")).send().await.unwrap(), 404).await;
    assert_eq!(body["detail"], "no route for GET /no/such/route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_rules_are_409_with_the_rule_and_write_nothing() {
    let app = spawn_app().await;
    let id = app.create_order().await;

    let ship_unpaid = app
        .post(&format!("/commands/orders/{id}/ship"), &json!({"shipment_id": "s", "tracking_number": "t"}))
        .await;
    let body = problem(ship_unpaid, 409).await;
    assert_eq!(body["type"], "/problems/rule-broken");
    assert_eq!(body["detail"], "only a paid order can be shipped; this one is pending");

    let wrong_amount = app
        .post(&format!("/commands/orders/{id}/pay"), &json!({"payment_id": "p", "amount_minor": 999}))
        .await;
    let body = problem(wrong_amount, 409).await;
    assert_eq!(body["field"], "amount_minor");
    assert_eq!(body["detail"], "amount_minor: the order total is 1000 minor units, the payment is 999");

    let pay = app
        .post(&format!("/commands/orders/{id}/pay"), &json!({"payment_id": "p", "amount_minor": 1000}))
        .await;
    assert_eq!(pay.status(), 200);
    let pay_twice = app
        .post(&format!("/commands/orders/{id}/pay"), &json!({"payment_id": "p", "amount_minor": 1000}))
        .await;
    let body = problem(pay_twice, 409).await;
    assert_eq!(body["detail"], "only a pending order can be paid; this one is paid");
    nothing_written(&app, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_if_match_is_400() {
    let app = spawn_app().await;
    let id = app.create_order().await;
    let response = app
        .http
        .post(app.url(&format!("/commands/orders/{id}/cancel")))
        .header("If-Match", "latest")
        .json(&json!({"reason": "r"}))
        .send()
        .await
        .unwrap();
    let body = problem(response, 400).await;
    assert_eq!(body["field"], "If-Match");
    nothing_written(&app, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413() {
    let app = crate::helpers::spawn_app_with(&["--body-limit", "1024"]).await;
    let items: Vec<_> =
        (0..100).map(|i| json!({"sku": format!("SKU-{i}"), "quantity": 1, "unit_price_minor": 1})).collect();
    let body = problem(
        app.post("/commands/orders", &json!({"user_id": "u", "currency": "EUR", "items": items})).await,
        413,
    )
    .await;
    assert_eq!(body["detail"], "the request body is larger than 1024 bytes");
    nothing_written(&app, 0).await;
}
