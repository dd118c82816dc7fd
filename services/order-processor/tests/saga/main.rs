//! The saga in-process against the real Kafka and PostgreSQL (`make up`): order events
//! produced to a fresh `orders` topic, commands read back from a fresh `order-commands`
//! topic, the inventory through the admin API.

mod crash;

use std::{net::SocketAddr, time::Duration};

use chrono::Utc;
use clap::Parser as _;
use order_processor::{Config, SERVICE, build};
use orders_domain::{
    CancelReason, Currency, LineItem, OrderEvent, OrderEventPayload, OrderId, PaymentId, ShipmentId, Sku,
    TrackingNumber, UserId,
};
use orders_events::{EventMetadata, OrderCommand, decode_command, encode_event};
use orders_runtime::Runtime;
use orders_testkit::{kafka::TestKafka, postgres::TestDatabase};
use rdkafka::{
    Message as _,
    consumer::StreamConsumer,
    message::Headers as _,
    producer::{FutureProducer, FutureRecord},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(90);

struct World {
    db: TestDatabase,
    group: String,
    _kafka: TestKafka,
    orders: String,
    producer: FutureProducer,
    commands: StreamConsumer,
    dlq: StreamConsumer,
    addr: SocketAddr,
    http: reqwest::Client,
    shutdown: CancellationToken,
    stopped: tokio::task::JoinHandle<orders_runtime::lifecycle::Outcome>,
}

impl World {
    async fn start() -> Self {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(std::env::var("TEST_LOG").unwrap_or_default())
                .with_test_writer()
                .try_init();
        }
        let db = TestDatabase::create().await;
        let mut kafka = TestKafka::new().await;
        let orders = kafka.topic("orders", 2).await;
        let commands = kafka.topic("order-commands", 2).await;
        let dlq = kafka.topic("dlq", 1).await;
        let group = kafka.name("processor");
        let group_arg = format!("--consumer-group={group}");
        let servers = orders_testkit::kafka::bootstrap_servers();
        let config = Config::try_parse_from([
            SERVICE,
            "--admin-addr=127.0.0.1:0",
            &format!("--database-url={}", db.url()),
            &format!("--orders-topic={orders}"),
            &format!("--commands-topic={commands}"),
            &format!("--dead-letter-topic={dlq}"),
            &group_arg,
            &format!("--kafka-bootstrap-servers={servers}"),
            "--retry-max-attempts=2",
            "--retry-backoff-min=50ms",
        ])
        .expect("config");
        let mut runtime = Runtime::new(SERVICE, &config.runtime);
        let addr = build(config, &mut runtime).await.expect("build");
        let shutdown = runtime.shutdown_token();
        let stopped = tokio::spawn(runtime.run_until(std::future::pending()));
        orders_testkit::process::wait_until_ready(addr, DEADLINE, "the processor").await;
        let producer = kafka.client_config().set("enable.idempotence", "true").create().expect("producer");
        let commands = kafka.consumer_from_start(&commands, 2);
        let dlq = kafka.consumer_from_start(&dlq, 1);
        Self {
            db,
            group,
            _kafka: kafka,
            orders,
            producer,
            commands,
            dlq,
            addr,
            http: reqwest::Client::new(),
            shutdown,
            stopped,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        assert_eq!(self.stopped.await.expect("joined"), orders_runtime::lifecycle::Outcome::Clean);
        // Dropping these readers can block in librdkafka's destroy for a long time
        // here (seen: for ever, in `rd_kafka_destroy_app`); they are let go on a
        // blocking thread instead, which the test does not wait for.
        let (commands, dlq) = (self.commands, self.dlq);
        drop(tokio::task::spawn_blocking(move || drop((commands, dlq))));
    }

    /// Runs `order-processor <args>` against this world's database; its exit status
    /// and standard output.
    fn cli(&self, args: &[&str]) -> (bool, String) {
        cli(&self.db, &self.group, args)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn set_stock(&self, sku: &str, available: i64) {
        let response = self
            .http
            .put(self.url(&format!("/inventory/{sku}")))
            .json(&json!({ "available": available }))
            .send();
        assert_eq!(response.await.expect("PUT").status(), 200);
    }

    async fn stock(&self, sku: &str) -> Value {
        let response = self.http.get(self.url(&format!("/inventory/{sku}"))).send().await.expect("GET");
        assert_eq!(response.status(), 200, "GET /inventory/{sku}");
        response.json().await.expect("json")
    }

    /// Waits until `sku`'s stock is `expected` (`{available, reserved, shipped}`).
    async fn wait_stock(&self, sku: &str, expected: (i64, i64, i64)) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let stock = self.stock(sku).await;
            let now = (stock["available"].as_i64(), stock["reserved"].as_i64(), stock["shipped"].as_i64());
            if now == (Some(expected.0), Some(expected.1), Some(expected.2)) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{sku} is {stock}, not {expected:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn send(&self, metadata: &EventMetadata, event: &OrderEvent) {
        self.send_raw(&event.order_id.to_string(), &encode_event(metadata, event)).await;
    }

    async fn send_raw(&self, key: &str, payload: &[u8]) {
        self.producer
            .send(FutureRecord::to(&self.orders).key(key).payload(payload), Duration::from_secs(30))
            .await
            .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
    }

    /// The next command on `order-commands`.
    async fn next_command(&self) -> orders_events::CommandMessage {
        let message = tokio::time::timeout(DEADLINE, self.commands.recv())
            .await
            .expect("a command within the deadline")
            .expect("receive");
        decode_command(message.payload().unwrap_or_default()).expect("a command envelope")
    }
}

/// Runs `order-processor <args>` against `db` as consumer `group`; its exit status and
/// standard output.
fn cli(db: &TestDatabase, group: &str, args: &[&str]) -> (bool, String) {
    let (ok, stdout, _) = cli_with_stderr(db, group, args);
    (ok, stdout)
}

/// [`cli`], with what it wrote on standard error (its log and progress lines).
fn cli_with_stderr(db: &TestDatabase, group: &str, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_order-processor"))
        .args(args)
        .env("DATABASE_URL", db.url())
        .env("CONSUMER_GROUP", group)
        .output()
        .expect("run order-processor");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

fn event(order: OrderId, version: u64, payload: OrderEventPayload) -> (EventMetadata, OrderEvent) {
    (
        EventMetadata::new(Uuid::now_v7(), None),
        OrderEvent { order_id: order, version, occurred_at: Utc::now(), payload },
    )
}

fn created(order: OrderId, lines: &[(&str, u32)]) -> (EventMetadata, OrderEvent) {
    let items: Vec<LineItem> = lines
        .iter()
        .map(|(sku, quantity)| LineItem::new(Sku::new(*sku).expect("sku"), *quantity, 100))
        .collect();
    let total_minor = items.iter().map(|i| i64::from(i.quantity) * i.unit_price_minor).sum();
    let payload = OrderEventPayload::Created {
        user_id: UserId::new("alice").expect("user"),
        currency: Currency::new("EUR").expect("currency"),
        items,
        total_minor,
    };
    event(order, 1, payload)
}

fn paid(order: OrderId, version: u64) -> (EventMetadata, OrderEvent) {
    let payload = OrderEventPayload::Paid {
        payment_id: PaymentId::new("pay-1").expect("payment"),
        amount_minor: 200,
        currency: Currency::new("EUR").expect("currency"),
    };
    event(order, version, payload)
}

fn new_order() -> OrderId {
    OrderId::from_uuid(Uuid::now_v7())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_saga_reserves_ships_cancels_and_releases() {
    let world = World::start().await;
    world.set_stock("SKU-A", 5).await;
    world.set_stock("SKU-B", 1).await;

    // Created with tracked stock (and an untracked line): reserved.
    let filled = new_order();
    let (meta, created_filled) = created(filled, &[("SKU-A", 2), ("SKU-ELSEWHERE", 4)]);
    world.send(&meta, &created_filled).await;
    world.wait_stock("SKU-A", (3, 2, 0)).await;
    // The same event again (a redelivery): no second reservation.
    world.send(&meta, &created_filled).await;

    // Too little stock: CancelOrder, nothing reserved.
    let short = new_order();
    let (meta_short, created_short) = created(short, &[("SKU-A", 1), ("SKU-B", 3)]);
    world.send(&meta_short, &created_short).await;
    let command = world.next_command().await;
    assert_eq!(command.order_id, short);
    assert_eq!(command.metadata.causation_id, Some(meta_short.event_id));
    match &command.command {
        OrderCommand::Cancel(cancel) => {
            let reason = cancel.reason.as_str();
            assert!(reason.starts_with("out of stock") && reason.contains("SKU-B"), "{reason}");
        }
        other => panic!("expected CancelOrder, got {other:?}"),
    }
    world.wait_stock("SKU-B", (1, 0, 0)).await;

    // Paid: a shipment and ShipOrder.
    let (meta_paid, paid_filled) = paid(filled, 2);
    world.send(&meta_paid, &paid_filled).await;
    let command = world.next_command().await;
    assert_eq!(command.order_id, filled);
    let OrderCommand::Ship(ship) = &command.command else { panic!("expected ShipOrder, got {command:?}") };
    // Shipped: the reserved units leave.
    let (meta_shipped, shipped) = event(
        filled,
        3,
        OrderEventPayload::Shipped {
            shipment_id: ShipmentId::new(ship.shipment_id.as_str()).expect("id"),
            tracking_number: TrackingNumber::new(ship.tracking_number.as_str()).expect("tracking"),
        },
    );
    world.send(&meta_shipped, &shipped).await;
    world.wait_stock("SKU-A", (3, 0, 2)).await;

    // Created then cancelled: reserved, then released.
    let cancelled = new_order();
    let (meta_c, created_c) = created(cancelled, &[("SKU-A", 3)]);
    world.send(&meta_c, &created_c).await;
    world.wait_stock("SKU-A", (0, 3, 2)).await;
    let (meta_x, cancel) = event(
        cancelled,
        2,
        OrderEventPayload::Cancelled { reason: CancelReason::new("changed mind").expect("reason") },
    );
    world.send(&meta_x, &cancel).await;
    world.wait_stock("SKU-A", (3, 0, 2)).await;

    // A poison record ends in the dead-letter topic; the saga goes on.
    world.send_raw("garbage", b"\x00\x01 not an envelope").await;
    let letter =
        tokio::time::timeout(DEADLINE, world.dlq.recv()).await.expect("a dead letter").expect("receive");
    assert_eq!(letter.payload(), Some(&b"\x00\x01 not an envelope"[..]));
    world.stop().await;
}

#[tokio::test]
async fn the_inventory_api_answers_problems_for_bad_requests() {
    let world = World::start().await;
    let missing = world.http.get(world.url("/inventory/NOPE")).send().await.expect("GET");
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["content-type"], "application/problem+json");
    let negative =
        world.http.put(world.url("/inventory/SKU-A")).json(&json!({ "available": -1 })).send().await;
    assert_eq!(negative.expect("PUT").status(), 422);
    let garbage =
        world.http.put(world.url("/inventory/SKU-A")).body("{").header("content-type", "application/json");
    assert_eq!(garbage.send().await.expect("PUT").status(), 422);
    world.set_stock("SKU-B", 2).await;
    world.set_stock("SKU-A", 7).await;
    let list: Value =
        world.http.get(world.url("/inventory")).send().await.expect("GET").json().await.expect("json");
    assert_eq!(
        list,
        json!([
            { "sku": "SKU-A", "available": 7, "reserved": 0, "shipped": 0 },
            { "sku": "SKU-B", "available": 2, "reserved": 0, "shipped": 0 }
        ])
    );
    world.stop().await;
}

/// The dead-letter tool: a poison event is listed, replaying it fails again (exit 1),
/// a later event of its key is parked behind it, and discarding it releases the key:
/// the parked event is handled then, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dlq_tool_lists_replays_and_discards() {
    let world = World::start().await;
    world.set_stock("SKU-T", 10).await;
    let order = new_order();
    let key = order.to_string();
    world.send_raw(&key, b"not an envelope").await;
    tokio::time::timeout(DEADLINE, world.dlq.recv()).await.expect("a dead letter").expect("receive");
    let (meta, created) = created(order, &[("SKU-T", 4)]);
    world.send(&meta, &created).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (ok, listed) = world.cli(&["dlq", "list"]);
        assert!(ok, "dlq list");
        if listed.contains("parked=1") {
            assert!(listed.contains(&format!("key={key}")) && listed.contains("undecodable"), "{listed}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the later event is parked: {listed}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    world.wait_stock("SKU-T", (10, 0, 0)).await; // parked, not handled
    let (ok, replayed, log) = cli_with_stderr(&world.db, &world.group, &["dlq", "replay", "--all"]);
    assert!(!ok && replayed.contains("failed again 1"), "a poison record fails again: {replayed}");
    // Not a terminal: the progress comes as JSON log lines, a first and a last.
    let progress: Vec<Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "progress" && line["task"] == "replay")
        .collect();
    assert_eq!(
        progress.first().map(|l| (l["message"].clone(), l["total"].clone())),
        Some((json!("started"), json!(1))),
        "{log}"
    );
    assert_eq!(
        progress.last().map(|l| (l["message"].clone(), l["done"].clone())),
        Some((json!("finished"), json!(1))),
        "{log}"
    );
    assert!(log.contains("replay failed again"), "the failure is logged: {log}");
    let (ok, discarded) = world.cli(&["dlq", "discard", "--key", &key]);
    assert!(
        ok && discarded.contains("parked events handled 1") && discarded.contains("orders released 1"),
        "{discarded}"
    );
    world.wait_stock("SKU-T", (6, 4, 0)).await;
    let (ok, listed) = world.cli(&["dlq", "list"]);
    assert!(ok && listed.contains("no dead letters"), "{listed}");
    let (ok, stock) = world.cli(&["stock", "list"]);
    assert!(ok && stock.contains(r#""sku":"SKU-T","available":6"#), "{stock}");
    world.stop().await;
}

/// `order-processor migrate` (the chart's migrate job) makes a new database usable by the
/// tools and the service, and a second run changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_the_schema_then_exits() {
    let db = TestDatabase::create().await;
    let (ok, _) = cli(&db, "processor", &["stock", "list"]);
    assert!(!ok, "a new database has no inventory table");
    for run in ["first", "second"] {
        let (ok, out) = cli(&db, "processor", &["migrate"]);
        assert!(ok && out.contains("migrations applied"), "{run} migrate: {out}");
    }
    let (ok, out) = cli(&db, "processor", &["stock", "set", "SKU-M", "3"]);
    assert!(ok && out.contains(r#""sku":"SKU-M""#), "the inventory is usable: {out}");
    let (ok, out) = cli(&db, "processor", &["dlq", "list"]);
    assert!(ok && out.contains("no dead letters"), "the consumer's tables are there: {out}");
}

/// Steps waiting for a committer share its next transaction, and a step that fails
/// does not take its group down: the group is applied again one step at a time, so
/// every other event takes effect once and only the failing one is dead-lettered,
/// with its own reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_steps_share_a_transaction_and_a_failing_one_fails_alone() {
    const ORDERS: usize = 40;
    let world = World::start().await;
    world.set_stock("SKU-G", 1000).await;
    let orders: Vec<OrderId> = (0..ORDERS).map(|_| new_order()).collect();
    let refused = orders[ORDERS / 2];
    let client = orders_testkit::postgres::connect(world.db.url()).await;
    client
        .batch_execute(&format!(
            "CREATE FUNCTION refuse_order() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.order_id = '{refused}' THEN RAISE EXCEPTION 'refused by the test'; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER refuse_order BEFORE INSERT ON saga_outcomes
                 FOR EACH ROW EXECUTE FUNCTION refuse_order();"
        ))
        .await
        .expect("the refusing trigger");

    // The stock row held: the committers' first steps wait for it, the others queue.
    let mut holder = orders_testkit::postgres::connect(world.db.url()).await;
    let hold = holder.transaction().await.expect("begin");
    hold.execute("SELECT 1 FROM inventory WHERE sku = 'SKU-G' FOR UPDATE", &[]).await.expect("lock");
    let events: Vec<_> = orders.iter().map(|order| created(*order, &[("SKU-G", 1)])).collect();
    futures::future::join_all(events.iter().map(|(meta, event)| world.send(meta, event))).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .expect("waiting backends")
            .get(0);
        if waiting >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the committers never waited for the stock row");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hold.commit().await.expect("release the stock row");

    let letter =
        tokio::time::timeout(DEADLINE, world.dlq.recv()).await.expect("a dead letter").expect("receive");
    assert_eq!(letter.key(), Some(refused.to_string().as_bytes()));
    let reason = letter
        .headers()
        .and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == orders_consumer::dead_letter::header::REASON)
                .and_then(|h| h.value)
        })
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .unwrap_or_default();
    assert!(reason.contains("refused by the test"), "the dead letter's reason: {reason}");
    let applied = ORDERS as i64 - 1;
    world.wait_stock("SKU-G", (1000 - applied, applied, 0)).await;
    let row = client
        .query_one("SELECT count(*), count(DISTINCT handled_at) FROM consumer_inbox", &[])
        .await
        .expect("the inbox");
    let (claimed, transactions): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(claimed, applied, "every other event claimed once; the refused one not at all");
    assert!(transactions < applied, "{claimed} events in {transactions} transactions: none shared one");
    let reserved: i64 = client
        .query_one("SELECT count(*) FROM reservations WHERE sku = 'SKU-G'", &[])
        .await
        .expect("reservations")
        .get(0);
    assert_eq!(reserved, applied, "a reservation per applied order");
    world.stop().await;
}
