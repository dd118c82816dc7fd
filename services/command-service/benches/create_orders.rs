//! Create-order throughput and latency of the command service, beside a baseline
//! measured in the same run: the same two inserts per transaction (one event row, one
//! outbox row) issued directly against PostgreSQL by as many clients.
//!
//! Needs `make up`; run with `make bench` (or `cargo bench -p command-service --bench
//! create_orders`). Appends a Markdown table to `$BENCH_REPORT` when set.
//!
//! Phases, each on a fresh database:
//! 1. baseline: `CLIENTS` connections, each looping BEGIN; INSERT event; INSERT outbox;
//!    COMMIT, for `DURATION`;
//! 2. the service, `CLIENTS` HTTP clients looping `POST /commands/orders` for
//!    `DURATION`, with and without group commit, with and without `NOTIFY`;
//! 3. latency of the default configuration at half its saturating rate (paced, open
//!    loop).
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use command_service::{Config, SERVICE, build};
use orders_domain::{Currency, LineItem, Order, OrderId, Sku, UserId};
use orders_events::{EventMetadata, encode_event};
use orders_eventstore::{EventStore, Options, outbox_shard};
use orders_runtime::Runtime;
use orders_testkit::postgres::TestDatabase;
use serde_json::json;
use tokio_postgres::NoTls;
use uuid::Uuid;

const CLIENTS: usize = 32;
const DURATION: Duration = Duration::from_secs(8);

#[derive(Debug, Clone, Default)]
struct Run {
    ops: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    errors: usize,
}

impl Run {
    fn merge(mut self, other: Run) -> Run {
        self.ops += other.ops;
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
        self
    }

    fn per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[index]
    }
}

fn sample_envelope() -> Vec<u8> {
    let order_id = OrderId::from_uuid(Uuid::now_v7());
    let item = LineItem::new(Sku::new("SKU-1").unwrap(), 2, 500);
    let cmd = orders_domain::CreateOrder::new(
        UserId::new("user-1").unwrap(),
        Currency::new("EUR").unwrap(),
        vec![item],
    )
    .unwrap();
    let events = Order::default().create(order_id, cmd, chrono::Utc::now()).unwrap();
    encode_event(&EventMetadata::new(Uuid::now_v7(), None), &events[0])
}

async fn migrated_database() -> TestDatabase {
    let db = TestDatabase::create().await;
    let store = EventStore::new(orders_testkit::postgres::pool(db.url(), 2), Options::default());
    store.migrate().await.unwrap();
    db
}

async fn baseline() -> Run {
    let db = migrated_database().await;
    let payload = Arc::new(sample_envelope());
    let started = Instant::now();
    let deadline = started + DURATION;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = db.url().to_string();
            let payload = Arc::clone(&payload);
            tokio::spawn(async move {
                let (mut client, connection) = tokio_postgres::connect(&url, NoTls).await.unwrap();
                tokio::spawn(connection);
                let insert_event = client
                    .prepare(
                        "INSERT INTO events (stream_id, version, event_id, event_type, payload) \
                         VALUES ($1, 1, $2, 'OrderCreated', $3)",
                    )
                    .await
                    .unwrap();
                let insert_outbox = client
                    .prepare("INSERT INTO outbox (shard, topic, key, payload, headers) VALUES ($1, 'orders', $2, $3, $4)")
                    .await
                    .unwrap();
                let headers = json!({ "event_type": "OrderCreated" });
                let mut run = Run::default();
                while Instant::now() < deadline {
                    let start = Instant::now();
                    let id = Uuid::now_v7();
                    let key = id.to_string().into_bytes();
                    let tx = client.transaction().await.unwrap();
                    tx.execute(&insert_event, &[&id, &Uuid::now_v7(), &*payload]).await.unwrap();
                    tx.execute(&insert_outbox, &[&outbox_shard(&key), &key, &*payload, &headers]).await.unwrap();
                    tx.commit().await.unwrap();
                    run.latencies.push(start.elapsed());
                    run.ops += 1;
                }
                run
            })
        })
        .collect();
    let mut total = Run::default();
    for client in clients {
        total = total.merge(client.await.unwrap());
    }
    total.elapsed = started.elapsed();
    total
}

struct Service {
    url: String,
    _db: TestDatabase,
    shutdown: orders_runtime::CancellationToken,
}

async fn start_service(notify: bool, group_commit: bool) -> Service {
    let db = migrated_database().await;
    let pool_size = CLIENTS.to_string();
    let channel = if notify { "outbox" } else { "" };
    let committers = if group_commit { "4" } else { "0" };
    let config = Config::try_parse_from([
        SERVICE,
        "--http-addr",
        "127.0.0.1:0",
        "--database-url",
        db.url(),
        "--database-pool-size",
        &pool_size,
        "--notify-channel",
        channel,
        "--group-commit-workers",
        committers,
        "--log-filter",
        "warn",
        "--auth=off",
    ])
    .unwrap();
    let mut runtime = Runtime::new(SERVICE, &config.runtime);
    let addr = build(config, &mut runtime).await.unwrap();
    let shutdown = runtime.shutdown_token();
    tokio::spawn(runtime.run_until(std::future::pending()));
    let url = format!("http://{addr}/commands/orders");
    // Wait for the schema.
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("http://{addr}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Service { url, _db: db, shutdown }
}

fn body() -> serde_json::Value {
    json!({ "user_id": "user-1", "currency": "EUR", "items": [{ "sku": "SKU-1", "quantity": 2, "unit_price_minor": 500 }] })
}

async fn post(http: &reqwest::Client, url: &str) -> bool {
    match http.post(url).json(&body()).send().await {
        Ok(response) => response.status() == 201,
        Err(_) => false,
    }
}

async fn saturate(service: &Service) -> Run {
    let started = Instant::now();
    let deadline = started + DURATION;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = service.url.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut run = Run::default();
                while Instant::now() < deadline {
                    let start = Instant::now();
                    if post(&http, &url).await {
                        run.ops += 1;
                        run.latencies.push(start.elapsed());
                    } else {
                        run.errors += 1;
                    }
                }
                run
            })
        })
        .collect();
    let mut total = Run::default();
    for client in clients {
        total = total.merge(client.await.unwrap());
    }
    total.elapsed = started.elapsed();
    total
}

/// Open-loop load at `rate` requests per second: latency as a client sees it.
async fn paced(service: &Service, rate: f64) -> Run {
    let http = reqwest::Client::new();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let started = Instant::now();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = tokio::task::JoinSet::new();
    while started.elapsed() < DURATION {
        tick.tick().await;
        let http = http.clone();
        let url = service.url.clone();
        requests.spawn(async move {
            let start = Instant::now();
            (post(&http, &url).await, start.elapsed())
        });
    }
    let mut run = Run::default();
    while let Some(result) = requests.join_next().await {
        let (ok, latency) = result.unwrap();
        if ok {
            run.ops += 1;
            run.latencies.push(latency);
        } else {
            run.errors += 1;
        }
    }
    run.elapsed = started.elapsed();
    run
}

fn row(name: &str, run: &Run, baseline: &Run) -> String {
    format!(
        "| {name} | {:.0} | {:.2} | {:.1} | {:.1} | {} |",
        run.per_second(),
        run.per_second() / baseline.per_second(),
        run.percentile(0.5).as_secs_f64() * 1e3,
        run.percentile(0.99).as_secs_f64() * 1e3,
        run.errors
    )
}

#[tokio::main]
async fn main() {
    let base = baseline().await;
    let mut rows = vec![row("baseline: raw PostgreSQL, 2 inserts/tx", &base, &base)];
    let mut default_run = None;
    for (name, notify, group) in [
        ("service (default): group commit, NOTIFY per commit", true, true),
        ("service: group commit, no NOTIFY", false, true),
        ("service: one transaction per command, NOTIFY in each", true, false),
        ("service: one transaction per command, no NOTIFY", false, false),
    ] {
        let service = start_service(notify, group).await;
        let run = saturate(&service).await;
        rows.push(row(name, &run, &base));
        if default_run.is_none() {
            let half_rate = (run.per_second() / 2.0).max(1.0);
            let paced_run = paced(&service, half_rate).await;
            default_run = Some((half_rate, paced_run));
        }
        service.shutdown.cancel();
    }
    if let Some((rate, run)) = default_run {
        rows.push(row(
            &format!("service (default) at half its saturating rate: {rate:.0}/s, open loop"),
            &run,
            &base,
        ));
    }

    let mut report = vec![
        "### command-service: create order".to_string(),
        String::new(),
        format!(
            "{CLIENTS} concurrent clients, {}s per run; baseline = the same two inserts per transaction \
             (event + outbox row) sent straight to PostgreSQL, one connection per client. The service runs \
             in-process with 2 HTTP workers; client, service and PostgreSQL share the machine.",
            DURATION.as_secs()
        ),
        String::new(),
        "| run | orders/s | ratio to baseline | p50 ms | p99 ms | errors |".to_string(),
        "|---|---|---|---|---|---|".to_string(),
    ];
    report.extend(rows);
    report.push(String::new());
    let report = report.join("\n");
    orders_testkit::bench::report(&report);
}
