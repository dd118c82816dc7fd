//! The processor binary killed with SIGKILL several times in the middle of a run, then
//! started again, leaves inventory, reservations, shipments, outcomes and sent commands
//! exactly as a run of the same events that was never interrupted.

use std::{collections::BTreeMap, time::Duration};

use nix::sys::signal::Signal;
use orders_domain::{CancelReason, OrderEventPayload, OrderId, ShipmentId, TrackingNumber};
use orders_events::{OrderCommand, decode_command, encode_event};
use orders_testkit::{kafka::TestKafka, postgres::TestDatabase, process::ServiceProcess};
use rdkafka::{
    Message as _,
    producer::{FutureProducer, FutureRecord},
};
use uuid::Uuid;

use super::{DEADLINE, created, event, new_order, paid};

/// Records to produce: key and payload.
type Records = Vec<(String, Vec<u8>)>;
/// Per order, the names of the commands sent for it.
type Commands = BTreeMap<OrderId, Vec<&'static str>>;

const EXE: &str = env!("CARGO_BIN_EXE_order-processor");
const ORDERS: usize = 600;

/// One run: its own database and topics, the same events.
struct Run {
    db: TestDatabase,
    kafka: TestKafka,
    env: Vec<(String, String)>,
    orders: String,
    commands: String,
}

impl Run {
    async fn new(name: &str) -> Self {
        let db = TestDatabase::create().await;
        let mut kafka = TestKafka::new().await;
        let orders = kafka.topic("orders", 2).await;
        let commands = kafka.topic("order-commands", 2).await;
        let dlq = kafka.topic("dlq", 1).await;
        let env = [
            ("DATABASE_URL", db.url().to_string()),
            ("KAFKA_BOOTSTRAP_SERVERS", orders_testkit::kafka::bootstrap_servers()),
            // A killed member leaves the group when its session times out: keep that short.
            ("KAFKA_PROPERTIES", "session.timeout.ms=6000,heartbeat.interval.ms=1000".to_string()),
            ("ORDERS_TOPIC", orders.clone()),
            ("ORDER_COMMANDS_TOPIC", commands.clone()),
            ("DEAD_LETTER_TOPIC", dlq),
            ("CONSUMER_GROUP", kafka.name(name)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Self { db, kafka, env, orders, commands }
    }

    async fn start(&self) -> ServiceProcess {
        let mut process = ServiceProcess::start(EXE, "ADMIN_ADDR", &self.env);
        process.wait_for("/readyz", 200, DEADLINE).await;
        process
    }

    async fn set_stock(&self, process: &ServiceProcess, stock: &[(&str, i64)]) {
        let http = reqwest::Client::new();
        for (sku, available) in stock {
            let url = format!("http://{}/inventory/{sku}", process.addr());
            let response = http.put(url).json(&serde_json::json!({ "available": available })).send();
            assert_eq!(response.await.expect("PUT").status(), 200);
        }
    }

    async fn produce(&self, events: &[(String, Vec<u8>)]) {
        let producer: FutureProducer =
            self.kafka.client_config().set("enable.idempotence", "true").create().expect("producer");
        let sends = events.iter().map(|(key, payload)| {
            producer.send(FutureRecord::to(&self.orders).key(key).payload(payload), Duration::from_secs(30))
        });
        for sent in futures::future::join_all(sends).await {
            sent.unwrap_or_else(|(e, _)| panic!("produce: {e}"));
        }
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db.pool().get().await.expect("connection").query_one(sql, &[]).await.expect(sql).get(0)
    }

    /// Events handled so far (each claims one inbox row).
    async fn handled(&self) -> i64 {
        self.count("SELECT count(*) FROM consumer_inbox").await
    }

    /// Waits until every event is handled and every command relayed.
    async fn wait_done(&self, events: usize, process: &ServiceProcess) {
        let deadline = tokio::time::Instant::now() + DEADLINE * 2;
        loop {
            let handled = self.handled().await;
            let unsent = self.count("SELECT count(*) FROM outbox").await;
            if handled == events as i64 && unsent == 0 {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{handled} of {events} events handled, {unsent} commands unsent; logs:\n{}",
                process.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The saga's state, without what differs between two runs by design (the random
    /// shipment ids).
    async fn state(&self) -> Vec<String> {
        let client = self.db.pool().get().await.expect("connection");
        let queries = [
            "SELECT sku || ' ' || available || ' ' || reserved || ' ' || shipped FROM inventory ORDER BY sku",
            "SELECT order_id || ' ' || sku || ' ' || quantity || ' ' || state FROM reservations ORDER BY 1",
            "SELECT 'shipment ' || order_id FROM shipments ORDER BY 1",
            "SELECT order_id || ' ' || outcome || ' ' || CASE WHEN outcome = 'shipment requested' THEN '' ELSE detail END
             FROM saga_outcomes ORDER BY 1",
            "SELECT 'dead letter ' || count(*) FROM consumer_dead_letters",
        ];
        let mut rows = Vec::new();
        for sql in queries {
            for row in client.query(sql, &[]).await.expect(sql) {
                rows.push(row.get::<_, String>(0));
            }
        }
        rows
    }

    /// The commands on `order-commands`: per order, its command names by command id.
    /// Reads until `expected` distinct commands have arrived; redeliveries of a command
    /// (the same id, after a kill between the send and the outbox clear) count once.
    async fn commands(&self, expected: usize) -> BTreeMap<OrderId, BTreeMap<Uuid, &'static str>> {
        let reader = self.kafka.consumer_from_start(&self.commands, 2);
        let mut seen: BTreeMap<OrderId, BTreeMap<Uuid, &'static str>> = BTreeMap::new();
        while seen.values().map(BTreeMap::len).sum::<usize>() < expected {
            let message = tokio::time::timeout(DEADLINE, reader.recv())
                .await
                .expect("the expected commands within the deadline")
                .expect("receive");
            let command = decode_command(message.payload().unwrap_or_default()).expect("a command");
            let name = match command.command {
                OrderCommand::Cancel(_) => "CancelOrder",
                OrderCommand::Ship(_) => "ShipOrder",
                _ => "other",
            };
            let previous =
                seen.entry(command.order_id).or_default().insert(command.metadata.command_id, name);
            assert!(previous.is_none_or(|p| p == name), "one command id, two commands");
        }
        drop(tokio::task::spawn_blocking(move || drop(reader)));
        seen
    }
}

/// Per order: its events, and the commands the saga must answer them with.
fn workload() -> (Records, Commands) {
    let mut per_order = Vec::new();
    let mut expected = BTreeMap::new();
    for i in 0..ORDERS {
        let order = new_order();
        let quantity = u32::try_from(i % 3 + 1).expect("small");
        let mut lines = vec![("SKU-A", quantity)];
        if i % 2 == 0 {
            lines.push(("SKU-B", 1));
        }
        let out_of_stock = i % 5 == 0;
        if out_of_stock {
            lines.push(("SKU-Z", 1));
        }
        let mut events = vec![created(order, &lines)];
        let cancel = |version| {
            let reason = CancelReason::new("cancelled").expect("reason");
            event(order, version, OrderEventPayload::Cancelled { reason })
        };
        let commands = if out_of_stock {
            events.push(cancel(2));
            vec!["CancelOrder"]
        } else if i % 7 == 0 {
            events.push(cancel(2));
            vec![]
        } else {
            events.push(paid(order, 2));
            if i % 4 != 0 {
                let shipped = OrderEventPayload::Shipped {
                    shipment_id: ShipmentId::new(format!("SHP-{i}")).expect("id"),
                    tracking_number: TrackingNumber::new(format!("TRK{i}")).expect("tracking"),
                };
                events.push(event(order, 3, shipped));
            }
            vec!["ShipOrder"]
        };
        per_order.push((order, events));
        expected.insert(order, commands);
    }
    // Interleaved: every order's first event, then every second one, and so on.
    let mut interleaved = Vec::new();
    for version in 0..3 {
        for (order, events) in &per_order {
            if let Some((metadata, event)) = events.get(version) {
                interleaved.push((order.to_string(), encode_event(metadata, event)));
            }
        }
    }
    (interleaved, expected)
}

const STOCK: &[(&str, i64)] = &[("SKU-A", 1_000_000), ("SKU-B", 1_000_000), ("SKU-Z", 0)];

/// Runs the events through a processor, killed with SIGKILL each time the handled count
/// passes one of `kills` (fractions of the events); the state and commands at the end.
async fn run(
    run: &Run,
    events: &[(String, Vec<u8>)],
    kills: &[f64],
    expected_commands: usize,
) -> (Vec<String>, Commands) {
    let mut process = run.start().await;
    run.set_stock(&process, STOCK).await;
    run.produce(events).await;
    for fraction in kills {
        let at = (events.len() as f64 * fraction) as i64;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while run.handled().await < at {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{at} events not handled; logs:\n{}",
                process.logs()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        process.signal(Signal::SIGKILL);
        process.wait_exit(Duration::from_secs(10)).await;
        let handled = run.handled().await;
        assert!(
            handled < events.len() as i64,
            "the run ended before the kill at {fraction}: nothing was tested"
        );
        process = run.start().await;
    }
    run.wait_done(events.len(), &process).await;
    process.signal(Signal::SIGTERM);
    assert!(process.wait_exit(DEADLINE).await.success(), "clean stop; logs:\n{}", process.logs());
    let commands = run
        .commands(expected_commands)
        .await
        .into_iter()
        .map(|(order, commands)| (order, commands.into_values().collect()))
        .collect();
    (run.state().await, commands)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_several_times_it_ends_as_an_uninterrupted_run() {
    let (events, expected) = workload();
    let expected_commands = expected.values().map(Vec::len).sum();
    let expected: BTreeMap<_, _> =
        expected.into_iter().filter(|(_, commands)| !commands.is_empty()).collect();
    let (calm, killed) = tokio::join!(Run::new("calm"), Run::new("killed"));
    let (calm, killed) = tokio::join!(
        run(&calm, &events, &[], expected_commands),
        run(&killed, &events, &[0.1, 0.35, 0.6], expected_commands),
    );
    assert_eq!(calm.1, expected, "the uninterrupted run sent the commands the saga must send");
    assert_eq!(killed.1, expected, "the killed run sent each command once");
    assert!(calm.0.iter().any(|row| row.starts_with("SKU-A ")), "{:?}", calm.0);
    assert!(calm.0.contains(&"dead letter 0".to_string()), "{:?}", calm.0);
    // Row by row, so a difference shows as the first row that differs.
    assert_eq!(killed.0.len(), calm.0.len(), "as many rows");
    for (killed, calm) in killed.0.iter().zip(&calm.0) {
        assert_eq!(killed, calm);
    }
}
