//! orders-demo: the main job of `make demo`, run once the five services are up.
//!
//! First it sets the order processor's stock of the demo's SKUs (`PUT /inventory/{sku}`
//! on its admin API), one of them (`lamp`) too low for the run, so that the saga runs
//! out of it on purpose. Then it drives a workload of orders through the command API
//! (`POST /commands/orders` and `/pay`, `/cancel`), from many concurrent clients: every
//! order is created, most are paid, some of those and some unpaid ones cancelled by
//! the customer. Shipping is the saga's job: it reserves stock when an order is
//! created (or has it cancelled, out of stock), and ships it when it is paid. After
//! each command's `2xx` the demo asks the query API for the order with
//! `?min_version=<the version the command returned>` until the read model shows it,
//! and records how long that took. It prints its progress every second, waits for the
//! saga to settle the paid orders, then shows what the query API answers (orders by
//! status, a sample order with its history, a user's newest orders, the top users by
//! spend, the visibility latencies) beside what the saga did and the inventory, and the
//! stats aggregator's windows checked against the read model: two paths from `orders`
//! that must add up to the same orders, cancellations and net spend.
//!
//! Users are named after the run (`demo-<run>-user-NN`) so that the statistics shown
//! are this run's. A `409` means the system moved the order first (the saga cancelled
//! it for want of stock, or shipped it before the customer's cancel); the order's
//! script stops there and it is counted.

use std::{
    collections::BTreeMap,
    process::ExitCode,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures::StreamExt as _;
use orders_load::{Endpoints, Rng};
use serde_json::{Value, json};

/// Settings, from flags or environment variables.
#[derive(Debug, Clone, Parser)]
#[command(name = "orders-demo", about = "Drive a workload of orders and show what the read model answers")]
struct Args {
    #[command(flatten)]
    endpoints: Endpoints,
    /// Number of orders to create.
    #[arg(long, env = "DEMO_ORDERS", default_value_t = 1000)]
    orders: usize,
    /// Number of users placing them.
    #[arg(long, env = "DEMO_USERS", default_value_t = 50)]
    users: usize,
    /// Orders driven at once.
    #[arg(long, env = "DEMO_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// How long a command may take to become visible before it counts as not visible.
    #[arg(long, env = "DEMO_VISIBILITY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    visibility_timeout: Duration,
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| format!("`{value}` is not a duration ({e})"))
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The command kinds.
const KINDS: [&str; 4] = ["create", "pay", "ship", "cancel"];

/// What the run observed.
#[derive(Default)]
struct Tally {
    orders_done: AtomicUsize,
    accepted: AtomicUsize,
    conflicts: AtomicUsize,
    failures: AtomicUsize,
    visible: AtomicUsize,
    not_visible: AtomicUsize,
    /// (kind, HTTP round trip of the command)
    command_latency: Mutex<Vec<(&'static str, Duration)>>,
    /// (kind, from the command's 2xx to the query API showing its version)
    visibility: Mutex<Vec<(&'static str, Duration)>>,
    /// (order id, user, the status this run left it in)
    orders: Mutex<Vec<(String, String, &'static str)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Demo {
    args: Args,
    http: reqwest::Client,
    run: String,
    tally: Tally,
}

async fn run(args: Args) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(15)).build()?;
    // Ready now, or the services are not running: no wait.
    args.endpoints.wait_ready(&http, &["command", "query", "processor"], Duration::ZERO).await?;
    let run = uuid::Uuid::new_v4().simple().to_string()[..6].to_string();
    let demo = Arc::new(Demo { args, http, run, tally: Tally::default() });
    println!(
        "== Workload: {} orders from {} users, {} at a time (run {})",
        demo.args.orders, demo.args.users, demo.args.concurrency, demo.run
    );

    demo.seed_stock().await?;
    let started = Instant::now();
    let progress = tokio::spawn({
        let demo = Arc::clone(&demo);
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                demo.print_progress(started);
            }
        }
    });
    futures::stream::iter(0..demo.args.orders)
        .map(|i| {
            let demo = Arc::clone(&demo);
            async move { demo.drive(i).await }
        })
        .buffer_unordered(demo.args.concurrency.max(1))
        .collect::<Vec<()>>()
        .await;
    progress.abort();
    demo.print_progress(started);
    let elapsed = started.elapsed();
    let finals = demo.settle().await?;
    demo.report(elapsed, &finals).await
}

/// The demo's SKUs and the stock the run starts with: plenty of each but `lamp`.
const STOCK: [(&str, i64); 6] = [
    ("book", 100_000),
    ("lamp", 150),
    ("mug", 100_000),
    ("pen", 100_000),
    ("shirt", 100_000),
    ("tea", 100_000),
];

/// How a command ended.
enum Sent {
    Accepted(u64),
    Conflict,
    Failed,
}

impl Demo {
    /// Drives one order through its script.
    async fn drive(&self, index: usize) {
        let mut rng = Rng::new(index as u64 + 1);
        let user = format!("demo-{}-user-{:02}", self.run, rng.below(self.args.users as u64));
        let skus = STOCK.map(|(sku, _)| sku);
        let mut total = 0;
        let items: Vec<Value> = (0..1 + rng.below(3))
            .map(|_| {
                let quantity = 1 + rng.below(3) as i64;
                let price = 199 + rng.below(48) as i64 * 100;
                total += quantity * price;
                json!({ "sku": skus[rng.below(skus.len() as u64) as usize], "quantity": quantity, "unit_price_minor": price })
            })
            .collect();
        let body = json!({ "user_id": user, "currency": "EUR", "items": items });
        let (order_id, version) = match self.command("create", "/commands/orders", &body).await {
            Some((Sent::Accepted(version), Some(id))) => (id, version),
            _ => {
                self.tally.orders_done.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        self.until_visible("create", &order_id, version).await;

        let mut status = "pending";
        let roll = rng.below(100);
        let mut script: Vec<(&'static str, Value)> = Vec::new();
        if roll < 80 {
            script.push((
                "pay",
                json!({ "payment_id": format!("pay-{}", uuid::Uuid::new_v4()), "amount_minor": total }),
            ));
            if rng.below(100) < 10 {
                script.push(("cancel", json!({ "reason": "the customer changed their mind" })));
            }
        } else if roll < 95 {
            script.push(("cancel", json!({ "reason": "payment never arrived" })));
        }
        for (kind, body) in script {
            match self.command(kind, &format!("/commands/orders/{order_id}/{kind}"), &body).await {
                Some((Sent::Accepted(version), _)) => {
                    status = if kind == "pay" { "paid" } else { "cancelled" };
                    self.until_visible(kind, &order_id, version).await;
                }
                _ => break,
            }
        }
        lock(&self.tally.orders).push((order_id, user, status));
        self.tally.orders_done.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets the stock of the demo's SKUs on the order processor (tracking them).
    async fn seed_stock(&self) -> anyhow::Result<()> {
        println!("== Stock set on the order processor (PUT /inventory/{{sku}} {{\"available\": N}})");
        for (sku, available) in STOCK {
            self.args.endpoints.set_stock(&self.http, sku, available).await?;
            print!("  {sku} {available}");
        }
        println!("\n");
        Ok(())
    }

    /// Waits until the saga has settled every order this run left paid (shipped it, or
    /// had it cancelled); then every order's view, as the read model shows it.
    async fn settle(&self) -> anyhow::Result<Vec<(&'static str, Value)>> {
        let orders = lock(&self.tally.orders).clone();
        let deadline = Instant::now() + self.args.visibility_timeout * 2;
        let views: Vec<anyhow::Result<(&'static str, Value)>> = futures::stream::iter(orders)
            .map(|(id, _, scripted)| async move {
                loop {
                    let view = self.query(&format!("/queries/orders/{id}")).await?;
                    if scripted != "paid" || view["status"] != "paid" || Instant::now() > deadline {
                        return Ok((scripted, view));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .buffer_unordered(self.args.concurrency.max(1))
            .collect()
            .await;
        views.into_iter().collect()
    }

    /// What the saga did with this run's orders, and the inventory now.
    async fn report_saga(&self, finals: &[(&'static str, Value)]) -> anyhow::Result<()> {
        println!();
        println!(
            "== The saga (order-processor): what became of this run's orders (GET /queries/orders/{{id}})"
        );
        let mut outcomes: BTreeMap<(&str, String), usize> = BTreeMap::new();
        let mut out_of_stock = Vec::new();
        let mut shipment = None;
        for (scripted, view) in finals {
            let reason = view["cancellation"]["reason"].as_str().unwrap_or_default();
            let now = match view["status"].as_str().unwrap_or("unknown") {
                "cancelled" if reason.starts_with("out of stock") => {
                    out_of_stock.push(reason.to_string());
                    "cancelled, out of stock".to_string()
                }
                "shipped" => {
                    shipment
                        .get_or_insert_with(|| view["shipment"]["shipment_id"].as_str().map(str::to_string));
                    "shipped by the saga".to_string()
                }
                status => status.to_string(),
            };
            *outcomes.entry((scripted, now)).or_default() += 1;
        }
        println!("  {:<24} {:<26} {:>6}", "the customer left it", "the read model shows it", "orders");
        for ((scripted, now), count) in &outcomes {
            println!("  {scripted:<24} {now:<26} {count:>6}");
        }
        if let Some(Some(shipment)) = shipment {
            println!("  shipments are the saga's, e.g. {shipment}");
        }
        if let Some(reason) = out_of_stock.first() {
            println!("  {} cancelled by the saga for want of stock, e.g. \"{reason}\"", out_of_stock.len());
        }
        let unsettled =
            finals.iter().filter(|(scripted, view)| *scripted == "paid" && view["status"] == "paid");
        let unsettled = unsettled.count();

        let url = self.args.endpoints.processor("/inventory");
        let inventory: Value =
            self.http.get(&url).send().await?.json().await.with_context(|| format!("GET {url}"))?;
        println!();
        println!("== Inventory now (GET {url}; on hand = available + reserved; shipped counts every run)");
        println!("  {:<8} {:>8} {:>10} {:>9} {:>9}", "sku", "set to", "available", "reserved", "shipped");
        for item in inventory.as_array().into_iter().flatten() {
            let sku = item["sku"].as_str().unwrap_or_default();
            let Some((_, seeded)) = STOCK.iter().find(|(s, _)| *s == sku) else { continue };
            let count = |field: &str| item[field].as_i64().unwrap_or_default();
            println!(
                "  {sku:<8} {seeded:>8} {:>10} {:>9} {:>9}",
                count("available"),
                count("reserved"),
                count("shipped")
            );
        }
        if unsettled > 0 {
            bail!(
                "{unsettled} paid orders were not shipped by the saga in time: see .local/services/order-processor.log"
            );
        }
        Ok(())
    }

    /// Sends one command; returns how it ended and the order id it names.
    async fn command(&self, kind: &'static str, path: &str, body: &Value) -> Option<(Sent, Option<String>)> {
        let started = Instant::now();
        let response = self.http.post(self.args.endpoints.command(path)).json(body).send().await;
        let elapsed = started.elapsed();
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                eprintln!("[demo] {kind} failed: {e}");
                self.tally.failures.fetch_add(1, Ordering::Relaxed);
                return Some((Sent::Failed, None));
            }
        };
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            lock(&self.tally.command_latency).push((kind, elapsed));
            self.tally.accepted.fetch_add(1, Ordering::Relaxed);
            let id = answer["order_id"].as_str().map(str::to_string);
            return Some((Sent::Accepted(answer["version"].as_u64().unwrap_or(1)), id));
        }
        if status.as_u16() == 409 {
            self.tally.conflicts.fetch_add(1, Ordering::Relaxed);
            return Some((Sent::Conflict, None));
        }
        eprintln!("[demo] {kind} answered {status}: {answer}");
        self.tally.failures.fetch_add(1, Ordering::Relaxed);
        Some((Sent::Failed, None))
    }

    /// Asks the query API for `version` of the order until it shows it; records how long.
    async fn until_visible(&self, kind: &'static str, order_id: &str, version: u64) {
        let started = Instant::now();
        let url = self.args.endpoints.query(&format!("/queries/orders/{order_id}?min_version={version}"));
        while started.elapsed() < self.args.visibility_timeout {
            match self.http.get(&url).send().await {
                Ok(r) if r.status().is_success() && r.headers().get("x-view-stale").is_none() => {
                    lock(&self.tally.visibility).push((kind, started.elapsed()));
                    self.tally.visible.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        self.tally.not_visible.fetch_add(1, Ordering::Relaxed);
    }

    fn print_progress(&self, started: Instant) {
        let t = &self.tally;
        let visibility: Vec<Duration> = lock(&t.visibility).iter().map(|(_, d)| *d).collect();
        println!(
            "[demo] {:>5.1}s  orders {}/{}  commands {} accepted, {} conflicts, {} failed  visible {} (p50 {})  not visible {}",
            started.elapsed().as_secs_f64(),
            t.orders_done.load(Ordering::Relaxed),
            self.args.orders,
            t.accepted.load(Ordering::Relaxed),
            t.conflicts.load(Ordering::Relaxed),
            t.failures.load(Ordering::Relaxed),
            t.visible.load(Ordering::Relaxed),
            ms(percentile(&visibility, 0.50)),
            t.not_visible.load(Ordering::Relaxed),
        );
    }

    async fn query(&self, path: &str) -> anyhow::Result<Value> {
        let response = self.http.get(self.args.endpoints.query(path)).send().await?;
        let status = response.status();
        let body: Value = response.json().await.with_context(|| format!("GET {path}"))?;
        if !status.is_success() {
            bail!("GET {path} answered {status}: {body}");
        }
        Ok(body)
    }

    /// The stats aggregator's windows beside the read model: summed over this run's
    /// users, the orders, cancellations and net spend of the windows (fed by `orders`
    /// through the aggregator and `order-stats`) must equal those of the read model (fed
    /// by `orders` directly). Waits up to a minute for the windows to catch up (updates
    /// come at most once a second per window), then shows the top user's windows.
    async fn report_windows(&self, users: &[String], stats: &[Value], top: &str) -> anyhow::Result<()> {
        let sum = |values: &[Value], f: &dyn Fn(&Value) -> i64| values.iter().map(f).sum::<i64>();
        let expected = (
            sum(stats, &|s| s["order_count"].as_i64().unwrap_or(0)),
            sum(stats, &|s| s["orders_by_status"]["cancelled"].as_i64().unwrap_or(0)),
            sum(stats, &|s| {
                s["spent"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| c["total_spent_minor"].as_i64().unwrap_or(0))
                    .sum()
            }),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        let (windows, totals) = loop {
            let mut windows = Vec::new();
            for user in users {
                let answer = self.query(&format!("/queries/users/{user}/windows")).await?;
                windows.extend(
                    answer["windows"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(|w| (user.clone(), w)),
                );
            }
            let all: Vec<Value> = windows.iter().map(|(_, w)| w.clone()).collect();
            let field = |name: &'static str| move |w: &Value| w[name].as_i64().unwrap_or(0);
            let totals = (
                sum(&all, &field("order_count")),
                sum(&all, &field("cancelled_count")),
                sum(&all, &field("revenue_minor")) - sum(&all, &field("refunded_minor")),
            );
            if totals == expected || Instant::now() > deadline {
                break (windows, totals);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        println!();
        println!(
            "== Windows (stats-aggregator through order-stats; GET /queries/users/{{user}}/windows), this run's {} users",
            users.len()
        );
        println!("  {:<28} {:>12} {:>12}", "", "read model", "windows");
        println!("  {:<28} {:>12} {:>12}", "orders created", expected.0, totals.0);
        println!("  {:<28} {:>12} {:>12}", "orders cancelled", expected.1, totals.1);
        println!(
            "  {:<28} {:>12} {:>12}",
            "spent, EUR (revenue - refunds)",
            money(expected.2, ""),
            money(totals.2, "")
        );
        println!("  {top}'s windows, newest first:");
        println!(
            "    {:<21} {:<4} {:>6} {:>6} {:>10} {:>9} {:>10}  {:<5}",
            "window start", "cur", "orders", "paid", "revenue", "cancelled", "refunded", "final"
        );
        for (_, w) in windows.iter().filter(|(user, _)| user == top) {
            println!(
                "    {:<21} {:<4} {:>6} {:>6} {:>10} {:>9} {:>10}  {:<5}",
                w["window_start"].as_str().unwrap_or_default(),
                w["currency"].as_str().unwrap_or_default(),
                w["order_count"].as_i64().unwrap_or(0),
                w["paid_count"].as_i64().unwrap_or(0),
                money(w["revenue_minor"].as_i64().unwrap_or(0), ""),
                w["cancelled_count"].as_i64().unwrap_or(0),
                money(w["refunded_minor"].as_i64().unwrap_or(0), ""),
                w["final"].as_bool().unwrap_or(false)
            );
        }
        if totals != expected {
            bail!(
                "the windows do not add up to the read model after a minute: {totals:?} against {expected:?}"
            );
        }
        Ok(())
    }

    async fn report(&self, elapsed: Duration, finals: &[(&'static str, Value)]) -> anyhow::Result<()> {
        let orders = lock(&self.tally.orders).clone();
        let mut users: Vec<String> = orders.iter().map(|(_, u, _)| u.clone()).collect();
        users.sort();
        users.dedup();
        let mut stats = Vec::new();
        for user in &users {
            stats.push(self.query(&format!("/queries/users/{user}/stats")).await?);
        }

        println!();
        println!(
            "== Orders by status (GET /queries/users/{{user}}/stats, summed over this run's {} users)",
            users.len()
        );
        let mut by_status: BTreeMap<&str, i64> = BTreeMap::new();
        for s in &stats {
            for status in ["pending", "paid", "shipped", "cancelled"] {
                *by_status.entry(status).or_default() += s["orders_by_status"][status].as_i64().unwrap_or(0);
            }
        }
        let mut scripted: BTreeMap<&str, i64> = BTreeMap::new();
        for (_, _, status) in &orders {
            *scripted.entry(status).or_default() += 1;
        }
        println!("  {:<10} {:>8} {:>18}", "status", "read model", "commands sent");
        for status in ["pending", "paid", "shipped", "cancelled"] {
            println!(
                "  {:<10} {:>8} {:>18}",
                status,
                by_status[status],
                scripted.get(status).copied().unwrap_or(0)
            );
        }
        println!("  {:<10} {:>8} {:>18}", "total", by_status.values().sum::<i64>(), orders.len());
        println!(
            "  (the saga ships paid orders and cancels those it has no stock for: a difference is its work)"
        );
        self.report_saga(finals).await?;

        let sample = orders
            .iter()
            .find(|(_, _, s)| *s == "shipped")
            .or_else(|| orders.iter().find(|(_, _, s)| *s == "paid"))
            .or(orders.first());
        if let Some((id, user, _)) = sample {
            let view = self.query(&format!("/queries/orders/{id}")).await?;
            println!();
            println!("== A sample order (GET /queries/orders/{id})");
            println!("  user      {}", view["user_id"].as_str().unwrap_or_default());
            println!(
                "  status    {}   version {}",
                view["status"].as_str().unwrap_or_default(),
                view["version"]
            );
            println!(
                "  total     {}",
                money(view["total_minor"].as_i64().unwrap_or(0), view["currency"].as_str().unwrap_or(""))
            );
            for item in view["items"].as_array().into_iter().flatten() {
                println!(
                    "  item      {} x {} at {}",
                    item["quantity"],
                    item["sku"].as_str().unwrap_or_default(),
                    money(item["unit_price_minor"].as_i64().unwrap_or(0), "")
                );
            }
            if !view["payment"].is_null() {
                println!("  payment   {}", view["payment"]["payment_id"].as_str().unwrap_or_default());
            }
            if !view["shipment"].is_null() {
                println!(
                    "  shipment  {} (tracking {})",
                    view["shipment"]["shipment_id"].as_str().unwrap_or_default(),
                    view["shipment"]["tracking_number"].as_str().unwrap_or_default()
                );
            }
            if !view["cancellation"].is_null() {
                println!("  cancelled {}", view["cancellation"]["reason"].as_str().unwrap_or_default());
            }
            println!("  history");
            for event in view["history"].as_array().into_iter().flatten() {
                println!(
                    "    v{}  {:<15} {}",
                    event["version"],
                    event["type"].as_str().unwrap_or_default(),
                    event["occurred_at"].as_str().unwrap_or_default()
                );
            }

            let page = self.query(&format!("/queries/users/{user}/orders?page=1&page_size=5")).await?;
            println!();
            println!("== {user}'s newest orders (GET /queries/users/{user}/orders?page=1&page_size=5)");
            println!("  {} orders in all; page 1:", page["total"]);
            for o in page["orders"].as_array().into_iter().flatten() {
                println!(
                    "  {}  {:<9} {:>12}  {}",
                    o["order_id"].as_str().unwrap_or_default(),
                    o["status"].as_str().unwrap_or_default(),
                    money(o["total_minor"].as_i64().unwrap_or(0), o["currency"].as_str().unwrap_or("")),
                    o["created_at"].as_str().unwrap_or_default()
                );
            }
        }

        println!();
        println!("== Top users by spend (GET /queries/users/{{user}}/stats)");
        let spent = |s: &Value| s["spent"][0]["total_spent_minor"].as_i64().unwrap_or(0);
        let mut ranked: Vec<&Value> = stats.iter().collect();
        ranked.sort_by_key(|s| std::cmp::Reverse(spent(s)));
        println!("  {:<22} {:>6} {:>6} {:>14} {:>14}", "user", "orders", "paid", "spent", "average");
        for s in ranked.iter().take(5) {
            let currency = s["spent"][0]["currency"].as_str().unwrap_or("EUR");
            println!(
                "  {:<22} {:>6} {:>6} {:>14} {:>14}",
                s["user_id"].as_str().unwrap_or_default(),
                s["order_count"].as_i64().unwrap_or(0),
                s["paid_count"].as_i64().unwrap_or(0),
                money(spent(s), currency),
                money(s["spent"][0]["average_order_value_minor"].as_i64().unwrap_or(0), currency)
            );
        }

        if let Some(top) = ranked.first().and_then(|s| s["user_id"].as_str()) {
            self.report_windows(&users, &stats, top).await?;
        }

        println!();
        println!("== From a command's 2xx to the read model showing it (GET ...?min_version=N)");
        let visibility = lock(&self.tally.visibility).clone();
        let all: Vec<Duration> = visibility.iter().map(|(_, d)| *d).collect();
        println!("  {:<8} {:>6} {:>9} {:>9} {:>9} {:>9}", "command", "count", "p50", "p90", "p99", "max");
        for kind in KINDS.iter().chain(&["all"]) {
            let durations: Vec<Duration> = if *kind == "all" {
                all.clone()
            } else {
                visibility.iter().filter(|(k, _)| k == kind).map(|(_, d)| *d).collect()
            };
            if durations.is_empty() {
                continue;
            }
            println!(
                "  {:<8} {:>6} {:>9} {:>9} {:>9} {:>9}",
                kind,
                durations.len(),
                ms(percentile(&durations, 0.50)),
                ms(percentile(&durations, 0.90)),
                ms(percentile(&durations, 0.99)),
                ms(percentile(&durations, 1.0))
            );
        }
        let not_visible = self.tally.not_visible.load(Ordering::Relaxed);
        if not_visible > 0 {
            println!("  {not_visible} commands were not visible within {:?}", self.args.visibility_timeout);
        }
        let commands: Vec<Duration> = lock(&self.tally.command_latency).iter().map(|(_, d)| *d).collect();
        println!();
        println!(
            "== Commands: {} accepted in {:.1}s ({:.0}/s), HTTP round trip p50 {} p99 {}; {} conflicts, {} failed",
            commands.len(),
            elapsed.as_secs_f64(),
            commands.len() as f64 / elapsed.as_secs_f64(),
            ms(percentile(&commands, 0.50)),
            ms(percentile(&commands, 0.99)),
            self.tally.conflicts.load(Ordering::Relaxed),
            self.tally.failures.load(Ordering::Relaxed),
        );
        if not_visible > 0 || self.tally.failures.load(Ordering::Relaxed) > 0 {
            bail!("some commands failed or never became visible: see the logs in .local/services/");
        }
        Ok(())
    }
}

/// The `p` quantile (nearest rank).
fn percentile(values: &[Duration], p: f64) -> Option<Duration> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
}

/// `1234` → `12.34 EUR`.
fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let minor = minor.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", minor / 100, minor % 100).trim_end().to_string()
}
