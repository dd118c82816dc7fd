//! The saga with the rest of the system: command-service, the outbox relay, the
//! projector and the processor, each in-process on its own runtime and database, over
//! the real Kafka and PostgreSQL of `make up` (fresh topics). Orders go in through the
//! command API; what the saga did comes out of the query API and the inventory API.

use std::{net::SocketAddr, time::Duration};

use orders_runtime::{Runtime, lifecycle::Outcome};
use orders_testkit::{kafka::TestKafka, postgres::TestDatabase};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(120);

/// One service running in-process.
struct Running {
    name: &'static str,
    addr: SocketAddr,
    shutdown: CancellationToken,
    stopped: JoinHandle<Outcome>,
}

impl Running {
    async fn start<C>(
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

    async fn stop(self) {
        self.shutdown.cancel();
        assert_eq!(self.stopped.await.expect("joined"), Outcome::Clean, "{} stops cleanly", self.name);
    }
}

struct System {
    _databases: [TestDatabase; 3],
    _kafka: TestKafka,
    http: reqwest::Client,
    services: Vec<Running>,
}

impl System {
    async fn start() -> Self {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let (write, read, own) =
            tokio::join!(TestDatabase::create(), TestDatabase::create(), TestDatabase::create());
        let mut kafka = TestKafka::new().await;
        let orders = kafka.topic("orders", 2).await;
        let commands = kafka.topic("order-commands", 2).await;
        let dlq = kafka.topic("dlq", 1).await;
        let common = |db: &TestDatabase, group: &str| {
            vec![
                format!("--database-url={}", db.url()),
                format!("--kafka-bootstrap-servers={}", orders_testkit::kafka::bootstrap_servers()),
                format!("--orders-topic={orders}"),
                format!("--consumer-group={}", kafka.name(group)),
                format!("--dead-letter-topic={dlq}"),
                "--shutdown-timeout=10s".to_string(),
            ]
        };
        let with = |mut args: Vec<String>, more: &[&str]| {
            args.extend(more.iter().map(ToString::to_string));
            args
        };
        let commands_arg = format!("--commands-topic={commands}");

        let command_service = Running::start(
            command_service::SERVICE,
            &with(common(&write, "command-service"), &["--http-addr=127.0.0.1:0", &commands_arg]),
            |c: &command_service::Config| &c.runtime,
            command_service::build,
        )
        .await;
        // The relay takes no consumer group and no dead-letter topic.
        let relay_args: Vec<String> = common(&write, "relay")
            .into_iter()
            .filter(|a| !a.starts_with("--consumer-group") && !a.starts_with("--dead-letter-topic"))
            .chain(["--admin-addr=127.0.0.1:0".to_string()])
            .collect();
        let relay = Running::start(
            outbox_relay::SERVICE,
            &relay_args,
            |c: &outbox_relay::Config| &c.runtime,
            outbox_relay::build,
        )
        .await;
        let projector = Running::start(
            projector::SERVICE,
            &with(common(&read, "projector"), &["--http-addr=127.0.0.1:0"]),
            |c: &projector::Config| &c.runtime,
            projector::build,
        )
        .await;
        let processor = Running::start(
            order_processor::SERVICE,
            &with(common(&own, "processor"), &["--admin-addr=127.0.0.1:0", &commands_arg]),
            |c: &order_processor::Config| &c.runtime,
            order_processor::build,
        )
        .await;
        Self {
            _databases: [write, read, own],
            _kafka: kafka,
            http: reqwest::Client::new(),
            services: vec![command_service, relay, projector, processor],
        }
    }

    fn url(&self, service: &str, path: &str) -> String {
        let running = self.services.iter().find(|s| s.name == service).expect("a service of the system");
        format!("http://{}{path}", running.addr)
    }

    async fn set_stock(&self, sku: &str, available: i64) {
        let response = self
            .http
            .put(self.url(order_processor::SERVICE, &format!("/inventory/{sku}")))
            .json(&json!({ "available": available }))
            .send();
        assert_eq!(response.await.expect("PUT /inventory").status(), 200);
    }

    async fn stock(&self, sku: &str) -> Value {
        let url = self.url(order_processor::SERVICE, &format!("/inventory/{sku}"));
        self.http.get(url).send().await.expect("GET /inventory").json().await.expect("json")
    }

    /// `POST /commands/orders`: the new order's id.
    async fn create(&self, lines: &[(&str, u32, i64)]) -> String {
        let items: Vec<Value> = lines
            .iter()
            .map(|(sku, quantity, price)| json!({ "sku": sku, "quantity": quantity, "unit_price_minor": price }))
            .collect();
        let body = json!({ "user_id": "e2e-user", "currency": "EUR", "items": items });
        let response = self
            .http
            .post(self.url(command_service::SERVICE, "/commands/orders"))
            .json(&body)
            .send()
            .await
            .expect("POST /commands/orders");
        assert_eq!(response.status(), 201);
        let created: Value = response.json().await.expect("json");
        created["order_id"].as_str().expect("order_id").to_string()
    }

    async fn pay(&self, order: &str, amount_minor: i64) {
        let response = self
            .http
            .post(self.url(command_service::SERVICE, &format!("/commands/orders/{order}/pay")))
            .json(&json!({ "payment_id": "pay-e2e", "amount_minor": amount_minor }))
            .send()
            .await
            .expect("POST pay");
        assert!(response.status().is_success(), "pay: {}", response.status());
    }

    /// Polls the query API until the order's status is `status`; the order view.
    async fn wait_status(&self, order: &str, status: &str) -> Value {
        let url = self.url(projector::SERVICE, &format!("/queries/orders/{order}"));
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let response = self.http.get(&url).send().await.expect("GET /queries/orders");
            let view: Value =
                if response.status() == 200 { response.json().await.expect("json") } else { Value::Null };
            if view["status"] == status {
                return view;
            }
            assert!(tokio::time::Instant::now() < deadline, "order {order} is not {status}: {view}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the inventory API until `sku` is `(available, reserved, shipped)`.
    async fn wait_stock(&self, sku: &str, expected: (i64, i64, i64)) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let stock = self.stock(sku).await;
            let now = (stock["available"].as_i64(), stock["reserved"].as_i64(), stock["shipped"].as_i64());
            if now == (Some(expected.0), Some(expected.1), Some(expected.2)) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{sku} is {stock}, not {expected:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(self) {
        // The processor first: it sends commands, command-service takes them.
        for running in self.services.into_iter().rev() {
            running.stop().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_orders_ship_and_orders_without_stock_are_cancelled() {
    let system = System::start().await;
    system.set_stock("SKU-E2E", 5).await;

    // Enough stock: reserved on creation; paid, the saga ships it.
    let filled = system.create(&[("SKU-E2E", 2, 700), ("SKU-UNTRACKED", 1, 100)]).await;
    system.wait_stock("SKU-E2E", (3, 2, 0)).await;
    system.pay(&filled, 1500).await;
    let view = system.wait_status(&filled, "shipped").await;
    let shipment = view["shipment"]["shipment_id"].as_str().unwrap_or_default();
    assert!(shipment.starts_with("SHP-"), "the saga's shipment: {view}");
    assert!(view["shipment"]["tracking_number"].as_str().is_some_and(|t| t.starts_with("TRK")), "{view}");
    system.wait_stock("SKU-E2E", (3, 0, 2)).await; // on hand 5 → 3

    // Too little stock: cancelled with the reason, nothing reserved.
    let short = system.create(&[("SKU-E2E", 4, 700)]).await;
    let view = system.wait_status(&short, "cancelled").await;
    let reason = view["cancellation"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("out of stock") && reason.contains("SKU-E2E"), "{view}");
    assert_eq!(
        system.stock("SKU-E2E").await,
        json!({ "sku": "SKU-E2E", "available": 3, "reserved": 0, "shipped": 2 })
    );

    system.stop().await;
}
