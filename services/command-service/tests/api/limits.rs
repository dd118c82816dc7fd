//! What one request or one client may ask: a body nested too deep, a head too large, a
//! client too slow to send its request, a client over its rate of commands.

use std::time::Duration;

use orders_testkit::jwt::TestIssuer;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{order_body, problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_body_nested_deeper_than_any_of_the_apis_is_refused_unparsed() {
    let app = spawn_app().await;
    let deep = format!(
        r#"{{"user_id": "a", "currency": "EUR", "items": {}{}}}"#,
        "[".repeat(5_000),
        "]".repeat(5_000)
    );
    let refused = problem(app.post_raw("/commands/orders", &deep).await, 400).await;
    assert_eq!(refused["type"], "/problems/malformed-body");
    assert!(refused["detail"].as_str().unwrap().contains("nests deeper than 16 levels"), "{refused}");
}

#[tokio::test]
async fn a_request_head_too_large_is_refused() {
    let app = spawn_app().await;
    let huge = "x".repeat(200 * 1024);
    let response =
        app.http.post(app.url("/commands/orders")).header("X-Padding", huge).json(&order_body()).send().await;
    match response {
        Ok(response) => assert_eq!(response.status(), 431),
        // The server may close the connection while the client still writes the head.
        Err(e) => assert!(e.is_request() || e.is_body() || e.is_connect(), "{e}"),
    }
    assert_eq!(app.count("SELECT count(*) FROM events").await, 0);
}

#[tokio::test]
async fn a_client_too_slow_to_send_its_request_is_answered_408_and_cut_off() {
    let app = spawn_app_with(&["--http-client-timeout=1s"]).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(b"POST /commands/orders HTTP/1.1\r\nHost: orders\r\n").await.unwrap();
    // The rest of the head never comes: the server answers and closes within its timeout.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("the server kept the slow connection open")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after_and_others_go_on() {
    let issuer = TestIssuer::new("orders-commands");
    let mut args = issuer.args();
    args.extend(["--command-rate-limit=1".to_string(), "--command-rate-burst=2".to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let app = spawn_app_with(&args).await;
    let body =
        json!({ "currency": "EUR", "items": [{ "sku": "SKU-1", "quantity": 1, "unit_price_minor": 100 }] });
    let create =
        |token: String| app.http.post(app.url("/commands/orders")).bearer_auth(token).json(&body).send();

    let alice = issuer.token("alice");
    assert_eq!(create(alice.clone()).await.unwrap().status(), 201);
    assert_eq!(create(alice.clone()).await.unwrap().status(), 201);
    let over = create(alice.clone()).await.unwrap();
    assert_eq!(over.headers()["retry-after"], "1");
    assert_eq!(problem(over, 429).await["type"], "/problems/rate-limited");
    // Another client has a rate of its own.
    assert_eq!(create(issuer.token("bob")).await.unwrap().status(), 201);
    assert_eq!(app.count("SELECT count(*) FROM events").await, 3, "the refused command wrote nothing");
}
