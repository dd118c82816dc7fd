//! `Idempotency-Key`: a retry replays the first answer without a second effect.

use serde_json::{Value, json};

use crate::helpers::{order_body, problem, spawn_app, spawn_app_behind_proxy, spawn_app_with, wait_until};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_racing_its_original_replays_the_original_answer() {
    // A snapshot every 2 events: the pay (version 2) writes one, and waits there on
    // the test's own uncommitted snapshot row, its other rows already written.
    let app = spawn_app_with(&["--snapshot-every", "2"]).await;
    let id = app.create_order().await;
    let pay = || {
        app.http
            .post(app.url(&format!("/commands/orders/{id}/pay")))
            .header("Idempotency-Key", "pay-race")
            .json(&json!({"payment_id": "p-1", "amount_minor": 1000}))
            .send()
    };
    let blocker = app.hold_snapshot_of(&id).await;
    let original = tokio::spawn(pay());
    wait_until("the original waits in its transaction", || async { app.lock_waiters().await >= 1 }).await;
    // The retry finds no record yet (the original has not committed) and runs too.
    let retry = tokio::spawn(pay());
    wait_until("the retry waits on the original", || async { app.lock_waiters().await >= 2 }).await;
    blocker.batch_execute("ROLLBACK").await.unwrap();

    let original = original.await.unwrap().unwrap();
    assert_eq!(original.status(), 200);
    let original: Value = original.json().await.unwrap();
    let retry = retry.await.unwrap().unwrap();
    let status = retry.status();
    let body: Value = retry.json().await.unwrap();
    assert_eq!(status, 200, "the retry must replay the original's answer, got {body}");
    assert_eq!(body, original);
    assert_eq!(app.events(&id).await.len(), 2, "one payment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_whose_commit_answer_is_lost_is_answered_as_committed_once() {
    // One transaction per command: the lost answer is this create's own.
    let app = spawn_app_behind_proxy(&["--group-commit-workers", "0"]).await;
    let proxy = app.proxy.as_ref().unwrap();
    proxy.lose_next_commit_answer();
    let response = app.post("/commands/orders", &order_body()).await;
    assert_eq!(proxy.commit_answers_lost(), 1, "the create's commit answer was lost");
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    // The commit took effect: the answer says so (a 503 would make a client without
    // an Idempotency-Key retry and create a second order).
    assert_eq!(status, 201, "{body}");
    assert_eq!(app.count("SELECT count(*) FROM events").await, 1, "one order");
    assert_eq!(app.events(body["order_id"].as_str().unwrap()).await.len(), 1);
}
