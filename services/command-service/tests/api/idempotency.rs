//! `Idempotency-Key`: a retry replays the first answer without a second effect.

use serde_json::{Value, json};

use crate::helpers::{order_body, problem, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_and_body_replay_the_first_answer_once() {
    let app = spawn_app().await;
    let send = || {
        app.http
            .post(app.url("/commands/orders"))
            .header("Idempotency-Key", "key-1")
            .json(&order_body())
            .send()
    };
    let first = send().await.unwrap();
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("Idempotency-Replayed").is_none());
    let first: Value = first.json().await.unwrap();

    let second = send().await.unwrap();
    assert_eq!(second.status(), 201);
    assert_eq!(second.headers()["Idempotency-Replayed"], "true");
    let second: Value = second.json().await.unwrap();
    assert_eq!(first, second);
    assert_eq!(app.count("SELECT count(*) FROM events").await, 1, "the retry must not create a second order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_with_another_body_is_422() {
    let app = spawn_app().await;
    let post = |body: Value| {
        app.http.post(app.url("/commands/orders")).header("Idempotency-Key", "key-2").json(&body).send()
    };
    assert_eq!(post(order_body()).await.unwrap().status(), 201);
    let mut other = order_body();
    other["user_id"] = json!("someone-else");
    let body = problem(post(other).await.unwrap(), 422).await;
    assert_eq!(body["type"], "/problems/idempotency-key-reused");
    assert_eq!(app.count("SELECT count(*) FROM events").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_replayed_too() {
    let app = spawn_app().await;
    let id = app.create_order().await;
    let ship = || {
        app.http
            .post(app.url(&format!("/commands/orders/{id}/ship")))
            .header("Idempotency-Key", "ship-1")
            .json(&json!({"shipment_id": "s", "tracking_number": "t"}))
            .send()
    };
    problem(ship().await.unwrap(), 409).await;
    // Paying in between does not change the answer to the same request.
    let pay = app
        .post(&format!("/commands/orders/{id}/pay"), &json!({"payment_id": "p", "amount_minor": 1000}))
        .await;
    assert_eq!(pay.status(), 200);
    let replayed = ship().await.unwrap();
    assert_eq!(replayed.headers()["Idempotency-Replayed"], "true");
    problem(replayed, 409).await;
    assert_eq!(app.count("SELECT count(*) FROM events").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_have_one_effect() {
    let app = spawn_app().await;
    let requests = (0..8).map(|_| {
        let request =
            app.http.post(app.url("/commands/orders")).header("Idempotency-Key", "race").json(&order_body());
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    });
    let answers = futures::future::join_all(requests).await;
    assert_eq!(app.count("SELECT count(*) FROM events").await, 1);
    let ids: std::collections::HashSet<_> =
        answers.iter().filter(|(s, _)| *s == 201).map(|(_, b)| b["order_id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "{answers:?}");
    assert!(answers.iter().all(|(s, _)| *s == 201 || *s == 409), "{answers:?}");
}
