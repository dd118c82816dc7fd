//! `spawn_app`: the service in-process, on port 0, with a fresh database and topics.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;
use command_service::{Config, SERVICE, build};
use orders_runtime::{CancellationToken, Runtime};
use orders_testkit::{kafka::TestKafka, pg_proxy::PgProxy, postgres::TestDatabase};
use serde_json::{Value, json};

pub struct TestApp {
    /// Between the app and its database, when it was started with one.
    pub proxy: Option<PgProxy>,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub db: TestDatabase,
    pub kafka: TestKafka,
    pub commands_topic: String,
    pub dead_letter_topic: String,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(extra: &[&str]) -> TestApp {
    spawn_app_on(TestDatabase::create().await, None, extra).await
}

/// The app with a [`PgProxy`] between it and its database.
pub async fn spawn_app_behind_proxy(extra: &[&str]) -> TestApp {
    let db = TestDatabase::create().await;
    let proxy = PgProxy::start(db.url()).await;
    spawn_app_on(db, Some(proxy), extra).await
}

async fn spawn_app_on(db: TestDatabase, proxy: Option<PgProxy>, extra: &[&str]) -> TestApp {
    let database_url = proxy.as_ref().map_or(db.url(), PgProxy::url).to_string();
    let mut kafka = TestKafka::new().await;
    let orders_topic = kafka.topic("orders", 3).await;
    let commands_topic = kafka.topic("order-commands", 3).await;
    let dead_letter_topic = kafka.topic("dlq-order-commands", 1).await;
    let group = kafka.name("command-service");
    let bootstrap = orders_testkit::kafka::bootstrap_servers();
    let mut args = vec![
        SERVICE,
        "--http-addr",
        "127.0.0.1:0",
        "--database-url",
        &database_url,
        "--orders-topic",
        &orders_topic,
        "--commands-topic",
        &commands_topic,
        "--dead-letter-topic",
        &dead_letter_topic,
        "--consumer-group",
        &group,
        "--kafka-bootstrap-servers",
        &bootstrap,
        "--shutdown-timeout",
        "5s",
    ];
    args.extend_from_slice(extra);
    // Without authentication unless the test sets it up.
    if !extra.iter().any(|a| a.starts_with("--auth")) {
        args.push("--auth=off");
    }
    let config = Config::try_parse_from(args).unwrap();
    let mut runtime = Runtime::new(SERVICE, &config.runtime);
    let addr = build(config, &mut runtime).await.unwrap();
    let shutdown = runtime.shutdown_token();
    tokio::spawn(runtime.run_until(std::future::pending()));
    let app = TestApp {
        proxy,
        addr,
        http: reqwest::Client::new(),
        db,
        kafka,
        commands_topic: commands_topic.clone(),
        dead_letter_topic: dead_letter_topic.clone(),
        shutdown,
    };
    app.wait_ready().await;
    app
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn wait_ready(&self) {
        orders_testkit::process::wait_until_ready(self.addr, Duration::from_secs(10), "the service").await;
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http.post(self.url(path)).json(body).send().await.unwrap()
    }

    pub async fn post_raw(&self, path: &str, body: &str) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    /// Creates an order of 2 x 500 EUR; returns its id.
    pub async fn create_order(&self) -> String {
        let response = self.post("/commands/orders", &order_body()).await;
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.unwrap();
        body["order_id"].as_str().unwrap().to_string()
    }

    pub async fn events(&self, order_id: &str) -> Vec<Value> {
        let response = self.http.get(self.url(&format!("/orders/{order_id}/events"))).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["events"].as_array().unwrap().clone()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        let client = self.db.pool().get().await.unwrap();
        client.query_one(sql, &[]).await.unwrap().get(0)
    }
}

pub fn order_body() -> Value {
    json!({ "user_id": "user-1", "currency": "EUR", "items": [{ "sku": "SKU-1", "quantity": 2, "unit_price_minor": 500 }] })
}

pub fn event_types(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["payload"]["type"].as_str().unwrap().to_string()).collect()
}

/// Reads a problem answer: asserts the status and content type, returns the body.
pub async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().unwrap().starts_with("/problems/"), "{body}");
    body
}

/// Waits until `condition` holds, or fails the test after 60 s.
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = tokio::time::Instant::now();
    while !condition().await {
        assert!(started.elapsed() < Duration::from_secs(60), "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestApp {
    /// Sessions of the app's database waiting on a lock.
    pub async fn lock_waiters(&self) -> i64 {
        let client = self.db.pool().get().await.unwrap();
        client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
                &[&self.db.name()],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// An uncommitted snapshot row of `order_id`, held by a connection of the test's
    /// own: a command whose transaction writes a snapshot of that order waits on it,
    /// after its other rows, until the returned connection commits or rolls back.
    pub async fn hold_snapshot_of(&self, order_id: &str) -> tokio_postgres::Client {
        let blocker = orders_testkit::postgres::connect(self.db.url()).await;
        blocker
            .batch_execute(&format!(
                "BEGIN; INSERT INTO snapshots (stream_id, version, state) VALUES ('{order_id}', 1, '\\x00')"
            ))
            .await
            .unwrap();
        blocker
    }
}
