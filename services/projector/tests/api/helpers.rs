//! A test world (its own database and topics), the projector in-process on port 0, and
//! order event streams built with the domain.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use clap::Parser;
use orders_domain::{
    CancelOrder, CancelReason, CreateOrder, Currency, LineItem, Order, OrderEvent, OrderId, OrderStatus,
    PayOrder, PaymentId, ShipOrder, ShipmentId, Sku, TrackingNumber, UserId,
};
use orders_events::{EventMetadata, encode_event};
use orders_runtime::{CancellationToken, Runtime};
use orders_testkit::{kafka::TestKafka, postgres::TestDatabase};
use projector::{Config, SERVICE, build};
use rdkafka::{
    Message,
    consumer::StreamConsumer,
    message::{Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use serde_json::Value;
use uuid::Uuid;

/// A database and topics of one test, shared by the projector runs of that test.
pub struct World {
    pub db: TestDatabase,
    pub kafka: TestKafka,
    pub topic: String,
    /// The `order-stats` topic of this world.
    pub stats_topic: String,
    pub dead_letters: String,
    producer: FutureProducer,
    produced: i64,
}

impl World {
    pub async fn new() -> Self {
        let db = TestDatabase::create().await;
        let mut kafka = TestKafka::new().await;
        let topic = kafka.topic("orders", 3).await;
        let stats_topic = kafka.topic("order-stats", 2).await;
        let dead_letters = kafka.topic("dlq-orders", 1).await;
        let producer = kafka.client_config().set("linger.ms", "5").create().unwrap();
        Self { db, kafka, topic, stats_topic, dead_letters, producer, produced: 0 }
    }

    /// The projector's arguments for this world.
    pub fn args(&self, group: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            SERVICE,
            "--http-addr",
            "127.0.0.1:0",
            "--database-url",
            self.db.url(),
            "--orders-topic",
            &self.topic,
            "--dead-letter-topic",
            &self.dead_letters,
            "--consumer-group",
            &self.kafka.name(group),
            "--stats-topic",
            &self.stats_topic,
            "--windows-consumer-group",
            &self.kafka.name(&format!("{group}-windows")),
            "--kafka-bootstrap-servers",
            &orders_testkit::kafka::bootstrap_servers(),
            "--shutdown-timeout",
            "10s",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        args.extend(extra.iter().map(ToString::to_string));
        // Without authentication unless the test sets it up.
        if !extra.iter().any(|a| a.starts_with("--auth")) {
            args.push("--auth=off".into());
        }
        args
    }

    pub fn config(&self, group: &str, extra: &[&str]) -> Config {
        Config::try_parse_from(self.args(group, extra)).unwrap()
    }

    /// Produces records in order (key, value), all acknowledged on return.
    pub async fn produce(&mut self, records: &[Produced]) {
        let sends = records.iter().map(|r| {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &r.headers {
                headers = headers.insert(Header { key: k, value: Some(v.as_str()) });
            }
            self.producer.send(
                FutureRecord::to(&self.topic).key(&r.key).payload(&r.value).headers(headers),
                Duration::from_secs(30),
            )
        });
        for sent in futures::future::join_all(sends).await {
            sent.map_err(|(e, _)| e).unwrap();
        }
        self.produced += records.len() as i64;
    }

    /// Records produced so far.
    pub fn produced(&self) -> i64 {
        self.produced
    }

    pub async fn scalar(&self, sql: &str) -> i64 {
        let client = self.db.pool().get().await.unwrap();
        client.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// Records applied (the sum of the stored positions: offsets start at 0 and the
    /// producer is not transactional, so offsets have no gaps).
    pub async fn applied(&self) -> i64 {
        let client = self.db.pool().get().await.unwrap();
        let exists: bool = client
            .query_one("SELECT to_regclass('read_model.consumer_positions') IS NOT NULL", &[])
            .await
            .unwrap()
            .get(0);
        if !exists {
            return 0;
        }
        client
            .query_one("SELECT COALESCE(sum(next_offset), 0)::bigint FROM read_model.consumer_positions", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Waits until every produced record is applied.
    pub async fn wait_caught_up(&self) {
        for _ in 0..1200 {
            if self.applied().await >= self.produced {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the projection did not catch up: {} of {} records applied",
            self.applied().await,
            self.produced
        );
    }

    /// The read model's rows, as JSON text, in a stable order.
    pub async fn dump(&self) -> Vec<String> {
        dump(self.db.pool(), "read_model").await
    }

    /// The records of the dead-letter topic (waits for `count` of them).
    pub async fn dead_letters(&self, count: usize) -> Vec<(Vec<u8>, BTreeMap<String, String>)> {
        let reader: StreamConsumer = self.kafka.consumer_from_start(&self.dead_letters, 1);
        let mut out = Vec::new();
        while out.len() < count {
            let message = tokio::time::timeout(Duration::from_secs(20), reader.recv())
                .await
                .expect("dead letters did not arrive")
                .unwrap();
            let headers = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into())
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((message.payload().unwrap_or_default().to_vec(), headers));
        }
        out
    }
}

/// The rows of the read model in `schema`, as JSON text, in a stable order.
pub async fn dump(pool: &deadpool_postgres::Pool, schema: &str) -> Vec<String> {
    let client = pool.get().await.unwrap();
    let mut rows = Vec::new();
    for (table, key) in [
        ("order_views", "order_id"),
        ("user_stats", "user_id, currency, partition"),
        ("parked_events", "order_id, version"),
        ("partition_clock", "partition"),
    ] {
        let sql = format!("SELECT row_to_json(t)::text FROM {schema}.{table} t ORDER BY {key}");
        rows.extend(
            client
                .query(&sql, &[])
                .await
                .unwrap()
                .iter()
                .map(|r| format!("{table}: {}", r.get::<_, String>(0))),
        );
    }
    rows
}

/// The projector running in-process against a world.
pub struct TestApp {
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    stopped: Option<tokio::task::JoinHandle<orders_runtime::lifecycle::Outcome>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestApp {
    /// Starts the projector in `world` with consumer group `group`, and waits until ready.
    pub async fn spawn(world: &World, group: &str, extra: &[&str]) -> Self {
        let config = world.config(group, extra);
        let mut runtime = Runtime::new(SERVICE, &config.runtime);
        let addr = build(config, &mut runtime).await.unwrap();
        let shutdown = runtime.shutdown_token();
        let stopped = Some(tokio::spawn(runtime.run_until(std::future::pending())));
        let app = Self { addr, http: reqwest::Client::new(), shutdown, stopped };
        app.wait_ready().await;
        app
    }

    /// Stops it and waits until it has stopped.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(stopped) = self.stopped.take() {
            assert_eq!(stopped.await.unwrap(), orders_runtime::lifecycle::Outcome::Clean);
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn wait_ready(&self) {
        orders_testkit::process::wait_until_ready(self.addr, Duration::from_secs(15), "the projector").await;
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// `GET path`, expecting `200` and JSON.
    pub async fn json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }

    pub fn api(&self) -> Api {
        Api { base: format!("http://{}", self.addr), http: self.http.clone() }
    }
}

/// The projector as a child process: for tests that read its metrics, which are
/// process-wide (the in-process apps of tests running in parallel share one recorder).
pub struct ChildApp {
    process: orders_testkit::process::ServiceProcess,
    pub http: reqwest::Client,
}

impl ChildApp {
    /// Starts the projector binary in `world` with consumer group `group` and the extra
    /// environment `extra`, and waits until ready.
    pub async fn spawn(world: &World, group: &str, extra: &[(&str, &str)]) -> Self {
        let mut env: Vec<(String, String)> = [
            ("DATABASE_URL", world.db.url().to_string()),
            ("ORDERS_TOPIC", world.topic.clone()),
            ("DEAD_LETTER_TOPIC", world.dead_letters.clone()),
            ("CONSUMER_GROUP", world.kafka.name(group)),
            ("ORDER_STATS_TOPIC", world.stats_topic.clone()),
            ("WINDOWS_CONSUMER_GROUP", world.kafka.name(&format!("{group}-windows"))),
            ("KAFKA_BOOTSTRAP_SERVERS", orders_testkit::kafka::bootstrap_servers()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut process = orders_testkit::process::ServiceProcess::start(
            env!("CARGO_BIN_EXE_projector"),
            "HTTP_ADDR",
            &env,
        );
        process.wait_for("/readyz", 200, Duration::from_secs(30)).await;
        Self { process, http: reqwest::Client::new() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.process.addr())
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// `GET path`, expecting `200` and JSON.
    pub async fn json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }

    /// The value of an unlabelled metric, if `/metrics` has it.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let metrics = self.metrics().await;
        metrics.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// Waits (at most 30 s) until the unlabelled metric `name` has `value`.
    pub async fn wait_for_metric(&self, name: &str, value: f64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.metric(name).await != Some(value) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} never reached {value}: {:?}\n{}",
                self.metric(name).await,
                self.metrics().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The query API at some address (in-process or a child process).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    /// `GET path`, expecting `200` and JSON.
    pub async fn json(&self, path: &str) -> Value {
        let response = self.http.get(format!("{}{path}", self.base)).send().await.unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }
}

/// The read model that projecting the whole topic without interruption gives: a fresh
/// database, every partition from the beginning to the end.
pub async fn reference_dump(world: &World) -> Vec<String> {
    let db = TestDatabase::create().await;
    let url: orders_runtime::postgres::DatabaseUrl = db.url().parse().unwrap();
    projector::schema::migrate(&url).await.unwrap();
    let session = orders_runtime::postgres::Session::default();
    let options = projector::schema::PoolOptions {
        application_name: "reference",
        schema: projector::schema::LIVE,
        session: &session,
        asynchronous_commit: false,
    };
    let pool = projector::schema::pool(&url, 2, options).unwrap();
    let settings = projector::projection_settings(&world.config("reference", &[]));
    let mut projection =
        orders_projection::Projection::assign_all(settings, pool, projector::project::ReadModel)
            .await
            .unwrap();
    assert!(projection.run_to_end(&CancellationToken::new()).await.unwrap());
    drop(projection);
    dump(db.pool(), "read_model").await
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

/// One record to produce.
#[derive(Debug, Clone)]
pub struct Produced {
    pub key: String,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Produced {
    fn event(event: OrderEvent) -> Self {
        let metadata = EventMetadata::new(Uuid::now_v7(), None);
        Self {
            key: event.order_id.to_string(),
            value: encode_event(&metadata, &event),
            headers: vec![
                ("event_type".into(), event.event_type().into()),
                ("event_id".into(), metadata.event_id.to_string()),
            ],
        }
    }

    /// A record whose value is not an event at all.
    pub fn garbage(key: &str) -> Self {
        Self { key: key.into(), value: b"\xff\x00 not protobuf".to_vec(), headers: Vec::new() }
    }

    /// An envelope with a payload this reader does not know (as a newer schema would
    /// send): a valid envelope whose oneof is empty.
    pub fn unknown(order_id: Uuid) -> Self {
        use prost::Message as _;
        let envelope = orders_events::pb::EventEnvelope {
            event_id: Uuid::now_v7().to_string(),
            order_id: order_id.to_string(),
            version: 1,
            correlation_id: Uuid::now_v7().to_string(),
            occurred_at: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
            ..Default::default()
        };
        Self { key: order_id.to_string(), value: envelope.encode_to_vec(), headers: Vec::new() }
    }
}

/// How far an order goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Pending,
    Paid,
    Shipped,
    CancelledPending,
    CancelledPaid,
}

impl Fate {
    pub const ALL: [Fate; 5] =
        [Fate::Pending, Fate::Paid, Fate::Shipped, Fate::CancelledPending, Fate::CancelledPaid];
}

/// A time on a fixed day, so that tests can give orders equal creation times.
pub fn at(second: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 10, 0, 0).unwrap() + chrono::Duration::seconds(i64::from(second))
}

/// The events of one order of `user` (`quantity` x 500 EUR), created at `created`.
pub fn order_events(user: &str, quantity: u32, fate: Fate, created: DateTime<Utc>) -> Vec<OrderEvent> {
    let id = OrderId::from_uuid(Uuid::now_v7());
    let item = LineItem::new(Sku::new("SKU-1").unwrap(), quantity, 500);
    let cmd =
        CreateOrder::new(UserId::new(user).unwrap(), Currency::new("EUR").unwrap(), vec![item]).unwrap();
    let mut order = Order::default();
    let mut events = Vec::new();
    let mut push = |order: &mut Order, new: Vec<OrderEvent>| {
        for e in new {
            order.apply(&e).unwrap();
            events.push(e);
        }
    };
    let created_events = order.create(id, cmd, created).unwrap();
    push(&mut order, created_events);
    let later = created + chrono::Duration::seconds(30);
    if matches!(fate, Fate::Paid | Fate::Shipped | Fate::CancelledPaid) {
        let total = order.total().unwrap().amount_minor;
        let pay = PayOrder::new(PaymentId::new(format!("pay-{id}")).unwrap(), total, None).unwrap();
        let paid = order.pay(pay, later).unwrap();
        push(&mut order, paid);
    }
    if fate == Fate::Shipped {
        let ship = ShipOrder::new(
            ShipmentId::new(format!("ship-{id}")).unwrap(),
            TrackingNumber::new("TN-1").unwrap(),
        );
        let shipped = order.ship(ship, later + chrono::Duration::seconds(30)).unwrap();
        push(&mut order, shipped);
    }
    if matches!(fate, Fate::CancelledPending | Fate::CancelledPaid) {
        let cancel = CancelOrder::new(CancelReason::new("changed my mind").unwrap());
        let cancelled = order.cancel(cancel, later + chrono::Duration::seconds(60)).unwrap();
        push(&mut order, cancelled);
    }
    events
}

/// `count` orders spread over `users` users and every fate, each order's events in
/// version order, orders interleaved round-robin (as a live system would publish them).
pub fn workload(count: usize, users: usize) -> Vec<Vec<OrderEvent>> {
    (0..count)
        .map(|i| {
            let user = format!("user-{}", i % users);
            let fate = Fate::ALL[(i / users) % Fate::ALL.len()];
            order_events(&user, 1 + (i % 3) as u32, fate, at(i as u32))
        })
        .collect()
}

/// The orders' events interleaved round-robin, as records.
pub fn interleave(orders: &[Vec<OrderEvent>]) -> Vec<Produced> {
    let longest = orders.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::new();
    for step in 0..longest {
        for events in orders {
            if let Some(e) = events.get(step) {
                out.push(Produced::event(e.clone()));
            }
        }
    }
    out
}

/// What the query API must show for `orders` (each order's full list of events):
/// each order's state by the domain's own replay, and each user's statistics.
pub struct Expected {
    pub orders: Vec<Order>,
}

impl Expected {
    pub fn new(orders: &[Vec<OrderEvent>]) -> Self {
        Self { orders: orders.iter().map(|events| Order::from_events(events).unwrap()).collect() }
    }

    /// Checks every order and every user's statistics through the query API.
    pub async fn check(&self, app: &Api) {
        let mut users: BTreeMap<String, (i64, [i64; 4], i64, i64)> = BTreeMap::new();
        for order in &self.orders {
            let id = order.id().unwrap();
            let view = app.json(&format!("/queries/orders/{id}")).await;
            let status = order.status().unwrap();
            assert_eq!(view["status"], status.as_str(), "{view}");
            assert_eq!(view["version"], order.version(), "{view}");
            assert_eq!(view["total_minor"], order.total().unwrap().amount_minor, "{view}");
            assert_eq!(view["history"].as_array().unwrap().len() as u64, order.version(), "{view}");
            assert!(view.get("missing_version").is_none(), "{view}");
            let user = users.entry(order.user_id().unwrap().to_string()).or_default();
            user.0 += 1;
            let slot = match status {
                OrderStatus::Pending => 0,
                OrderStatus::Paid => 1,
                OrderStatus::Shipped => 2,
                OrderStatus::Cancelled => 3,
            };
            user.1[slot] += 1;
            if matches!(status, OrderStatus::Paid | OrderStatus::Shipped) {
                user.2 += 1;
                user.3 += order.payment().unwrap().amount_minor;
            }
        }
        for (user, (count, by_status, paid, spent)) in users {
            let stats = app.json(&format!("/queries/users/{user}/stats")).await;
            assert_eq!(stats["order_count"], count, "{stats}");
            let s = &stats["orders_by_status"];
            assert_eq!(
                [&s["pending"], &s["paid"], &s["shipped"], &s["cancelled"]],
                by_status.map(Value::from).each_ref(),
                "{stats}"
            );
            assert_eq!(stats["paid_count"], paid, "{stats}");
            if paid > 0 {
                assert_eq!(stats["spent"][0]["total_spent_minor"], spent, "{stats}");
                assert_eq!(stats["spent"][0]["paid_orders"], paid, "{stats}");
            } else {
                assert_eq!(stats["spent"], serde_json::json!([]), "{stats}");
            }
        }
    }
}
