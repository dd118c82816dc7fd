//! The harness of the end-to-end tests: the five services of the platform, each
//! in-process on its own runtime (and its own database where it has one), over the real
//! Kafka and PostgreSQL of `make up`, on fresh topics. Orders go in through the command
//! API; what the rest of the system made of them comes out of the query API, the
//! inventory API and the topics.
//!
//! ```no_run
//! # async fn example() {
//! use orders_system_tests::System;
//!
//! let system = System::start().await;
//! let order = system.create("ann", "EUR", &[("SKU-1", 2, 500)]).await;
//! system.wait_status(&order, "pending").await;
//! system.stop().await;
//! # }
//! ```
//!
//! `TEST_LOG=<filter>` (a `RUST_LOG` filter) shows the services' logs.

use std::{net::SocketAddr, time::Duration};

use orders_runtime::{Runtime, lifecycle::Outcome};
use orders_testkit::{kafka::TestKafka, postgres::TestDatabase};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long any wait for the system lasts before a test fails (generous: the machine may
/// be cold and loaded).
pub const DEADLINE: Duration = Duration::from_secs(120);

/// One service running in-process.
#[derive(Debug)]
pub struct Running {
    /// Its name (`SERVICE`).
    pub name: &'static str,
    /// Where its HTTP server listens.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    stopped: JoinHandle<Outcome>,
}

impl Running {
    /// Parses `args` into its configuration, builds it on a runtime of its own and waits
    /// until it is ready.
    pub async fn start<C>(
        name: &'static str,
        args: &[String],
        runtime_args: impl Fn(&C) -> &orders_runtime::config::RuntimeArgs,
        build: impl AsyncFnOnce(C, &mut Runtime) -> anyhow::Result<SocketAddr>,
    ) -> Self
    where
        C: clap::Parser,
    {
        let config = C::try_parse_from(std::iter::once(name.to_string()).chain(args.iter().cloned()))
            .unwrap_or_else(|e| panic!("{name} config: {e}"));
        let mut runtime = Runtime::new(name, runtime_args(&config));
        let addr = build(config, &mut runtime).await.unwrap_or_else(|e| panic!("build {name}: {e:#}"));
        let shutdown = runtime.shutdown_token();
        let stopped = tokio::spawn(runtime.run_until(std::future::pending()));
        orders_testkit::process::wait_until_ready(addr, DEADLINE, name).await;
        Self { name, addr, shutdown, stopped }
    }

    /// Stops it; fails unless it stops cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        assert_eq!(self.stopped.await.expect("joined"), Outcome::Clean, "{} stops cleanly", self.name);
    }
}

/// The public APIs without authentication (the security tests set it up themselves).
fn no_auth() -> String {
    "--auth=off".to_string()
}

/// The whole platform.
#[derive(Debug)]
pub struct System {
    _databases: [TestDatabase; 3],
    kafka: TestKafka,
    orders_topic: String,
    http: reqwest::Client,
    services: Vec<Running>,
}

impl System {
    /// Starts the five services on fresh databases and topics, and waits until each is
    /// ready. The stats aggregator uses its default windows (an hour, aligned to the
    /// epoch) and emits updates every 100 ms.
    pub async fn start() -> Self {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let (write, read, own) =
            tokio::join!(TestDatabase::create(), TestDatabase::create(), TestDatabase::create());
        let mut kafka = TestKafka::new().await;
        let orders = kafka.topic("orders", 2).await;
        let commands = kafka.topic("order-commands", 2).await;
        let stats = kafka.topic("order-stats", 2).await;
        let dlq = kafka.topic("dlq", 1).await;
        let application_id = kafka.name("stats-aggregator");
        for suffix in stats_aggregator::INTERNAL_TOPICS {
            kafka.topic_named(&format!("{application_id}-{suffix}"), 2).await;
        }
        let bootstrap = format!("--kafka-bootstrap-servers={}", orders_testkit::kafka::bootstrap_servers());
        let database = |db: &TestDatabase| format!("--database-url={}", db.url());
        let group = |name: &str| format!("--consumer-group={}", kafka.name(name));
        let args = |more: &[String]| -> Vec<String> {
            [bootstrap.clone(), format!("--orders-topic={orders}"), "--shutdown-timeout=10s".to_string()]
                .into_iter()
                .chain(more.iter().cloned())
                .collect()
        };
        let (http, admin) = ("--http-addr=127.0.0.1:0".to_string(), "--admin-addr=127.0.0.1:0".to_string());
        let (commands, stats, dlq) = (
            format!("--commands-topic={commands}"),
            format!("--stats-topic={stats}"),
            format!("--dead-letter-topic={dlq}"),
        );

        let command_service = Running::start(
            command_service::SERVICE,
            &args(&[
                database(&write),
                http.clone(),
                commands.clone(),
                group("command-service"),
                dlq.clone(),
                no_auth(),
            ]),
            |c: &command_service::Config| &c.runtime,
            command_service::build,
        )
        .await;
        let relay = Running::start(
            outbox_relay::SERVICE,
            &args(&[database(&write), admin.clone()]),
            |c: &outbox_relay::Config| &c.runtime,
            outbox_relay::build,
        )
        .await;
        let windows_group = format!("--windows-consumer-group={}", kafka.name("projector-windows"));
        let projector = Running::start(
            projector::SERVICE,
            &args(&[
                database(&read),
                http,
                stats.clone(),
                group("projector"),
                windows_group,
                dlq.clone(),
                no_auth(),
            ]),
            |c: &projector::Config| &c.runtime,
            projector::build,
        )
        .await;
        let processor = Running::start(
            order_processor::SERVICE,
            &args(&[database(&own), admin.clone(), commands, group("processor"), dlq.clone()]),
            |c: &order_processor::Config| &c.runtime,
            order_processor::build,
        )
        .await;
        let aggregator = Running::start(
            stats_aggregator::SERVICE,
            &args(&[
                admin,
                stats,
                dlq,
                format!("--application-id={application_id}"),
                "--emit-interval=100ms".to_string(),
            ]),
            |c: &stats_aggregator::Config| &c.runtime,
            stats_aggregator::build,
        )
        .await;
        Self {
            _databases: [write, read, own],
            kafka,
            orders_topic: orders,
            http: reqwest::Client::new(),
            services: vec![command_service, relay, projector, processor, aggregator],
        }
    }

    /// The URL of `path` on `service`'s HTTP server.
    pub fn url(&self, service: &str, path: &str) -> String {
        let running = self.services.iter().find(|s| s.name == service).expect("a service of the system");
        format!("http://{}{path}", running.addr)
    }

    /// Produces `payload` as is to the `orders` topic under `key`, beside the events the
    /// relay publishes (a poison record, for instance).
    pub async fn send_raw_to_orders(&self, key: &str, payload: &[u8]) {
        use rdkafka::producer::{FutureProducer, FutureRecord};
        let producer: FutureProducer = self.kafka.client_config().create().expect("a producer");
        let record = FutureRecord::to(&self.orders_topic).key(key).payload(payload);
        producer.send(record, DEADLINE).await.map_err(|(e, _)| e).expect("produce to orders");
    }

    /// `GET path` on `service`: the status and the JSON body (`null` when there is none).
    pub async fn get(&self, service: &str, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(service, path)).send().await.expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `POST path` on `service` with a JSON body: the status and the JSON answer.
    pub async fn post(&self, service: &str, path: &str, body: &Value) -> (u16, Value) {
        let response = self.http.post(self.url(service, path)).json(body).send().await.expect("POST");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `POST /commands/orders` for `user` in `currency`, lines `(sku, quantity,
    /// unit_price_minor)`: the new order's id.
    pub async fn create(&self, user: &str, currency: &str, lines: &[(&str, u32, i64)]) -> String {
        let items: Vec<Value> = lines
            .iter()
            .map(|(sku, quantity, price)| json!({ "sku": sku, "quantity": quantity, "unit_price_minor": price }))
            .collect();
        let body = json!({ "user_id": user, "currency": currency, "items": items });
        let (status, created) = self.post(command_service::SERVICE, "/commands/orders", &body).await;
        assert_eq!(status, 201, "create: {created}");
        created["order_id"].as_str().expect("order_id").to_string()
    }

    /// `POST /commands/orders/{order}/pay`.
    pub async fn pay(&self, order: &str, amount_minor: i64) {
        let body = json!({ "payment_id": format!("pay-{order}"), "amount_minor": amount_minor });
        let (status, answer) =
            self.post(command_service::SERVICE, &format!("/commands/orders/{order}/pay"), &body).await;
        assert_eq!(status, 200, "pay: {answer}");
    }

    /// `POST /commands/orders/{order}/cancel`.
    pub async fn cancel(&self, order: &str, reason: &str) {
        let body = json!({ "reason": reason });
        let (status, answer) =
            self.post(command_service::SERVICE, &format!("/commands/orders/{order}/cancel"), &body).await;
        assert_eq!(status, 200, "cancel: {answer}");
    }

    /// The order's events from command-service (`GET /orders/{id}/events`), oldest first.
    pub async fn events(&self, order: &str) -> Vec<Value> {
        let (status, events) = self.get(command_service::SERVICE, &format!("/orders/{order}/events")).await;
        assert_eq!(status, 200, "events: {events}");
        events["events"].as_array().cloned().expect("a list of events")
    }

    /// Polls `GET path` on `service` until `done` holds of its answer; the answer.
    pub async fn wait_for(&self, service: &str, path: &str, done: impl Fn(u16, &Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let (status, answer) = self.get(service, path).await;
            if done(status, &answer) {
                return answer;
            }
            assert!(tokio::time::Instant::now() < deadline, "GET {path} on {service}: {status} {answer:#}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the query API until the order's status is `status`; the order view.
    pub async fn wait_status(&self, order: &str, status: &str) -> Value {
        let path = format!("/queries/orders/{order}");
        self.wait_for(projector::SERVICE, &path, |code, view| code == 200 && view["status"] == status).await
    }

    /// `PUT /inventory/{sku}`: tracks `sku` with `available` units.
    pub async fn set_stock(&self, sku: &str, available: i64) {
        let response = self
            .http
            .put(self.url(order_processor::SERVICE, &format!("/inventory/{sku}")))
            .json(&json!({ "available": available }))
            .send();
        assert_eq!(response.await.expect("PUT /inventory").status(), 200);
    }

    /// `GET /inventory/{sku}`.
    pub async fn stock(&self, sku: &str) -> Value {
        self.get(order_processor::SERVICE, &format!("/inventory/{sku}")).await.1
    }

    /// Polls the inventory API until `sku` is `(available, reserved, shipped)`.
    pub async fn wait_stock(&self, sku: &str, expected: (i64, i64, i64)) {
        let path = format!("/inventory/{sku}");
        self.wait_for(order_processor::SERVICE, &path, |_, stock| {
            (stock["available"].as_i64(), stock["reserved"].as_i64(), stock["shipped"].as_i64())
                == (Some(expected.0), Some(expected.1), Some(expected.2))
        })
        .await;
    }

    /// Stops every service, the last started first (the processor sends commands that
    /// command-service takes; the aggregator feeds the projector), each cleanly.
    pub async fn stop(self) {
        for running in self.services.into_iter().rev() {
            running.stop().await;
        }
    }
}
