//! `orders-load run`: the full life of orders driven through the command API at a fixed
//! rate (open loop) or as fast as a number of clients can (closed loop), measured from
//! outside as a customer would see it.
//!
//! Each order: create; 80 % are paid (one in ten of those then cancelled by the
//! customer, racing the saga's shipment), 15 % cancelled unpaid, 5 % left pending. The
//! saga reserves stock at creation and ships when paid; one line in twenty is of a
//! scarce SKU, so that the saga also cancels some orders for want of stock. A command
//! that fails (no answer, a `5xx`) is sent again with the same `Idempotency-Key` until
//! `--retry-for` runs out, as a client of a system that is being restarted would: a
//! retry never applies a command twice. A `409` means the system moved the order first
//! (the saga cancelled or shipped it), and the order's script ends there.
//!
//! After each accepted command the driver asks the query API for the order with
//! `?min_version=` until the read model shows it; after a pay, until it shows the order
//! shipped. One order in `--stats-probe-every` belongs to a user of its own (a probe),
//! whose windows the driver reads until they count it.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::{sync::Semaphore, task::JoinSet};

use crate::{
    Endpoints,
    record::{Measure, Percentiles, Recorder, Second},
    sample::{self, Sample},
};

/// The settings of a load run.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    /// Orders to drive.
    #[arg(long, env = "LOAD_ORDERS", default_value_t = 1000)]
    orders: u64,
    /// Orders started per second (open loop); 0 runs as fast as `--concurrency` clients can.
    #[arg(long, env = "LOAD_RATE", default_value_t = 0.0)]
    rate: f64,
    /// Orders driven at once in a closed-loop run (`--rate 0`).
    #[arg(long, env = "LOAD_CONCURRENCY", default_value_t = 32)]
    concurrency: usize,
    /// Most commands in flight in an open-loop run, and as many reads (each holds a
    /// connection); past it, a request waits for one to end, and its wait counts in its
    /// latency. Without a bound, a system that falls behind meets ever more connections
    /// and retries, and the run measures its collapse rather than its latency.
    #[arg(long, env = "LOAD_MAX_IN_FLIGHT", default_value_t = 512)]
    max_in_flight: usize,
    /// Users placing the orders.
    #[arg(long, env = "LOAD_USERS", default_value_t = 200)]
    users: u64,
    /// One order in this many belongs to a probe user, whose windows are read until they
    /// count it (0: none).
    #[arg(long, env = "LOAD_STATS_PROBE_EVERY", default_value_t = 50)]
    stats_probe_every: u64,
    /// How long a failing command is retried (same idempotency key).
    #[arg(long, env = "LOAD_RETRY_FOR", default_value = "60s", value_parser = crate::parse_duration)]
    retry_for: Duration,
    /// How long an accepted command may take to show in the read model (and a paid order
    /// to be shipped, and a probe's windows to count it) before it counts as not seen.
    #[arg(long, env = "LOAD_VISIBILITY_TIMEOUT", default_value = "60s", value_parser = crate::parse_duration)]
    visibility_timeout: Duration,
    /// Where to write the run's summary (JSON): its counts, percentiles and seconds.
    #[arg(long, env = "LOAD_SUMMARY")]
    summary: Option<std::path::PathBuf>,
    /// A service's Prometheus endpoint to sample each second for its backlog (consumer
    /// lag, unpublished outbox rows), as `name=url`; repeatable.
    #[arg(long = "metrics", value_parser = parse_endpoint)]
    metrics: Vec<(String, String)>,
    /// The run's name, in its users' and SKUs' names (random when unset).
    #[arg(long, env = "LOAD_RUN")]
    run: Option<String>,
}

fn parse_endpoint(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(name, url)| (name.to_string(), url.to_string()))
        .ok_or_else(|| format!("`{value}` is not name=url"))
}

/// The counts of a run.
#[derive(Debug, Default, Serialize)]
pub struct Counts {
    /// Orders whose script ended.
    pub orders_done: AtomicU64,
    /// Orders the command API created (a 2xx).
    pub created: AtomicU64,
    /// Commands accepted.
    pub accepted: AtomicU64,
    /// Commands answered `409`: the system moved the order first.
    pub conflicts: AtomicU64,
    /// Attempts sent again after a failure.
    pub retries: AtomicU64,
    /// Commands that never got a 2xx or 409 within the retry time, or got another 4xx.
    pub failed: AtomicU64,
    /// Accepted commands the read model did not show in time.
    pub not_visible: AtomicU64,
    /// Paid orders the saga shipped.
    pub shipped: AtomicU64,
    /// Paid orders the saga cancelled (out of stock) instead.
    pub cancelled_after_pay: AtomicU64,
    /// Paid orders neither shipped nor cancelled in time.
    pub not_shipped: AtomicU64,
    /// Probe orders whose windows did not count them in time.
    pub not_in_windows: AtomicU64,
}

/// What `--summary` holds.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    /// The run's name.
    pub run: &'a str,
    /// Orders per second asked (0: closed loop).
    pub rate: f64,
    /// Orders driven.
    pub orders: u64,
    /// Seconds from the first start to the last script's end.
    pub elapsed_s: f64,
    /// The counts.
    pub counts: &'a Counts,
    /// Per measure.
    pub percentiles: Vec<(&'static str, Measure, Percentiles)>,
    /// Second by second.
    pub seconds: Vec<Second>,
    /// The services' backlogs, sampled each second (`--metrics`).
    pub samples: Vec<Sample>,
}

const SKUS: [&str; 5] = ["book", "mug", "pen", "shirt", "tea"];

struct Driver {
    args: LoadArgs,
    http: reqwest::Client,
    run: String,
    counts: Counts,
    recorder: Recorder,
    samples: Arc<Mutex<Vec<Sample>>>,
    /// The commands in flight (`--max-in-flight`).
    commands: Semaphore,
    /// The reads in flight (`--max-in-flight` more): apart, so that reads waiting for
    /// the read model do not hold up commands.
    reads: Semaphore,
}

/// Runs the load; fails when a command failed or something was not seen in time.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let http = args
        .endpoints
        .client(reqwest::Client::builder().timeout(Duration::from_secs(10)).pool_max_idle_per_host(512))?;
    args.endpoints.wait_ready(&http, &["command", "query", "processor"], args.visibility_timeout).await?;
    let run = args.run.clone().unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..6].to_string());
    let started = Instant::now();
    let args_max_in_flight = args.max_in_flight;
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = sample::start(http.clone(), args.metrics.clone(), started, Arc::clone(&samples));
    let driver = Arc::new(Driver {
        args,
        http,
        run,
        counts: Counts::default(),
        recorder: Recorder::new(started),
        samples,
        commands: Semaphore::new(args_max_in_flight.max(1)),
        reads: Semaphore::new(args_max_in_flight.max(1)),
    });
    driver.seed_stock().await?;
    let mode = if driver.args.rate > 0.0 {
        format!("{} orders/s (open loop)", driver.args.rate)
    } else {
        format!("as fast as {} clients go (closed loop)", driver.args.concurrency)
    };
    println!(
        "== Load run {}: {} orders, {mode}, {} users",
        driver.run, driver.args.orders, driver.args.users
    );

    let progress = crate::progress::Progress::start(
        driver.args.orders,
        {
            let driver = Arc::clone(&driver);
            move || driver.counts.orders_done.load(Ordering::Relaxed)
        },
        {
            let driver = Arc::clone(&driver);
            move || driver.progress_line(started)
        },
    );
    let mut tasks = JoinSet::new();
    // Closed loop: `concurrency` orders at a time. Open loop: every order starts when due
    // (its requests bounded by `requests`).
    let limit = if driver.args.rate > 0.0 { Semaphore::MAX_PERMITS } else { driver.args.concurrency.max(1) };
    let permits = Arc::new(Semaphore::new(limit));
    for index in 0..driver.args.orders {
        let due = if driver.args.rate > 0.0 {
            let due = started + Duration::from_secs_f64(index as f64 / driver.args.rate);
            tokio::time::sleep_until(due.into()).await;
            Some(due)
        } else {
            None
        };
        let permit = Arc::clone(&permits).acquire_owned().await.context("the permits closed")?;
        let due = due.unwrap_or_else(Instant::now);
        let driver = Arc::clone(&driver);
        tasks.spawn(async move {
            driver.drive(index, due).await;
            driver.counts.orders_done.fetch_add(1, Ordering::Relaxed);
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    progress.finish();
    sampler.abort();
    driver.report(elapsed)
}

/// An HTTP answer, read whole.
struct Answer {
    status: reqwest::StatusCode,
    /// The projector's `x-view-stale` header was there.
    stale: bool,
    body: Vec<u8>,
}

/// How a command ended.
enum Sent {
    Accepted { version: u64, order_id: Option<String> },
    Conflict,
    Failed,
}

impl Driver {
    fn sku(&self, name: &str) -> String {
        format!("load-{}-{name}", self.run)
    }

    /// Tracks the run's SKUs: plenty of each, and a scarce one.
    async fn seed_stock(&self) -> anyhow::Result<()> {
        let scarce = (self.args.orders / 100).max(5) as i64;
        let stock = SKUS.iter().map(|s| (self.sku(s), 1_000_000_000)).chain([(self.sku("scarce"), scarce)]);
        for (sku, available) in stock {
            self.args.endpoints.set_stock(&self.http, &sku, available).await?;
        }
        Ok(())
    }

    async fn drive(&self, index: u64, due: Instant) {
        let mut rng = crate::Rng::new(index + 1);
        let probe = self.args.stats_probe_every > 0 && index.is_multiple_of(self.args.stats_probe_every);
        let user = if probe {
            format!("load-{}-probe-{index}", self.run)
        } else {
            format!("load-{}-user-{:03}", self.run, rng.below(self.args.users))
        };
        let mut total = 0;
        let items: Vec<Value> = (0..1 + rng.below(3))
            .map(|_| {
                let quantity = 1 + rng.below(3) as i64;
                let price = 199 + rng.below(48) as i64 * 100;
                total += quantity * price;
                let sku = if rng.below(20) == 0 { "scarce" } else { SKUS[rng.below(5) as usize] };
                json!({ "sku": self.sku(sku), "quantity": quantity, "unit_price_minor": price })
            })
            .collect();
        let key = |kind: &str| format!("load-{}-{index}-{kind}", self.run);
        let body = json!({ "user_id": user, "currency": "EUR", "items": items });
        let (order_id, version) =
            match self.command(Measure::HttpCreate, due, &key("create"), "/commands/orders", &body).await {
                Sent::Accepted { version, order_id: Some(id) } => (id, version),
                Sent::Accepted { order_id: None, .. } => {
                    eprintln!("[load] a create was accepted without an order id");
                    self.counts.failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Sent::Conflict | Sent::Failed => return,
            };
        self.counts.created.fetch_add(1, Ordering::Relaxed);
        let created = Instant::now();
        self.until_visible(Measure::VisibleCreate, &order_id, version).await;
        if probe {
            self.until_in_windows(&user, created).await;
        }

        let roll = rng.below(100);
        let cancel = json!({ "reason": "the customer changed their mind" });
        if roll < 80 {
            let pay = json!({ "payment_id": format!("pay-{}-{index}", self.run), "amount_minor": total });
            let path = format!("/commands/orders/{order_id}/pay");
            let Sent::Accepted { version, .. } =
                self.command(Measure::HttpPay, Instant::now(), &key("pay"), &path, &pay).await
            else {
                return;
            };
            let paid = Instant::now();
            self.until_visible(Measure::VisiblePay, &order_id, version).await;
            if rng.below(10) == 0 {
                self.cancel(&order_id, &key("cancel"), &cancel).await;
            } else {
                self.until_shipped(&order_id, version, paid).await;
            }
        } else if roll < 95 {
            self.cancel(&order_id, &key("cancel"), &cancel).await;
        }
    }

    async fn cancel(&self, order_id: &str, key: &str, body: &Value) {
        let path = format!("/commands/orders/{order_id}/cancel");
        if let Sent::Accepted { version, .. } =
            self.command(Measure::HttpCancel, Instant::now(), key, &path, body).await
        {
            self.until_visible(Measure::VisibleCancel, order_id, version).await;
        }
    }

    /// Sends one request once one of `slots` is free, reading its whole answer in it.
    async fn send(&self, slots: &Semaphore, request: reqwest::RequestBuilder) -> reqwest::Result<Answer> {
        let _slot = slots.acquire().await;
        let response = request.send().await?;
        let (status, stale) = (response.status(), response.headers().contains_key("x-view-stale"));
        Ok(Answer { status, stale, body: response.bytes().await?.to_vec() })
    }

    /// Sends a command until it is answered (retrying failures with the same key);
    /// records its round trip from `since`.
    async fn command(&self, measure: Measure, since: Instant, key: &str, path: &str, body: &Value) -> Sent {
        let url = self.args.endpoints.command(path);
        let deadline = Instant::now() + self.args.retry_for;
        let mut backoff = Duration::from_millis(50);
        loop {
            let response = self
                .send(&self.commands, self.http.post(&url).header("Idempotency-Key", key).json(body))
                .await;
            let error = match response {
                Ok(r) if r.status.is_success() => {
                    self.recorder.record(measure, since.elapsed());
                    self.counts.accepted.fetch_add(1, Ordering::Relaxed);
                    let answer: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                    return Sent::Accepted {
                        version: answer["version"].as_u64().unwrap_or(1),
                        order_id: answer["order_id"].as_str().map(str::to_string),
                    };
                }
                Ok(r) if r.status.as_u16() == 409 => {
                    self.counts.conflicts.fetch_add(1, Ordering::Relaxed);
                    return Sent::Conflict;
                }
                // 408 (the server gave up waiting for the request) and 429 (too many) are
                // answers to the attempt, not to the command: sent again.
                Ok(r) if r.status.is_client_error() && ![408, 429].contains(&r.status.as_u16()) => {
                    eprintln!(
                        "[load] POST {path} answered {}: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    );
                    self.counts.failed.fetch_add(1, Ordering::Relaxed);
                    return Sent::Failed;
                }
                Ok(r) => format!("answered {}", r.status),
                Err(e) => e.to_string(),
            };
            if Instant::now() + backoff > deadline {
                eprintln!("[load] POST {path} still failing after {:?}: {error}", self.args.retry_for);
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                return Sent::Failed;
            }
            self.counts.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Reads the order at `min_version` until the read model has it (not stale); the view.
    /// The projector waits for the version before it answers; an answer at once (stale,
    /// not there yet, or an error: the projector is busy or down) is asked again after a
    /// pause that doubles up to half a second, so that a system that falls behind is not
    /// also flooded by this driver's reads.
    async fn read_at(&self, order_id: &str, version: u64, deadline: Instant) -> Option<Value> {
        let url = self.args.endpoints.query(&format!("/queries/orders/{order_id}?min_version={version}"));
        let mut pause = Duration::from_millis(20);
        while Instant::now() < deadline {
            if let Ok(r) = self.send(&self.reads, self.http.get(&url)).await
                && r.status.is_success()
                && !r.stale
                && let Ok(view) = serde_json::from_slice::<Value>(&r.body)
            {
                return Some(view);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
        None
    }

    async fn until_visible(&self, measure: Measure, order_id: &str, version: u64) {
        let started = Instant::now();
        match self.read_at(order_id, version, started + self.args.visibility_timeout).await {
            Some(_) => self.recorder.record(measure, started.elapsed()),
            None => {
                eprintln!(
                    "[load] order {order_id} v{version} not in the read model after {:?}",
                    self.args.visibility_timeout
                );
                self.counts.not_visible.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Waits for the saga's next step of a paid order (`version` its pay's): shipped, or
    /// cancelled for want of stock.
    async fn until_shipped(&self, order_id: &str, version: u64, paid: Instant) {
        let view = self.read_at(order_id, version + 1, paid + self.args.visibility_timeout).await;
        match view.as_ref().and_then(|v| v["status"].as_str()) {
            Some("shipped") => {
                self.recorder.record(Measure::PaidToShipped, paid.elapsed());
                self.counts.shipped.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => {
                self.counts.cancelled_after_pay.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                eprintln!(
                    "[load] paid order {order_id} not shipped after {:?}",
                    self.args.visibility_timeout
                );
                self.counts.not_shipped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Reads a probe user's windows until they count its one order.
    async fn until_in_windows(&self, user: &str, created: Instant) {
        let url = self.args.endpoints.query(&format!("/queries/users/{user}/windows"));
        let deadline = created + self.args.visibility_timeout;
        while Instant::now() < deadline {
            if let Ok(r) = self.send(&self.reads, self.http.get(&url)).await
                && let Ok(answer) = serde_json::from_slice::<Value>(&r.body)
            {
                let counted: i64 = answer["windows"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|w| w["order_count"].as_i64().unwrap_or(0))
                    .sum();
                if counted > 0 {
                    self.recorder.record(Measure::CreateToStats, created.elapsed());
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("[load] {user}'s windows do not count its order after {:?}", self.args.visibility_timeout);
        self.counts.not_in_windows.fetch_add(1, Ordering::Relaxed);
    }

    fn progress_line(&self, started: Instant) -> String {
        let c = &self.counts;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let ms = |m| {
            self.recorder
                .median(m)
                .map_or("-".into(), |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3))
        };
        format!(
            "{:>6.1}s orders {} created {} commands {} ({:.0}/s) retries {} failed {} visible p50 {} shipped p50 {}",
            started.elapsed().as_secs_f64(),
            n(&c.orders_done),
            n(&c.created),
            n(&c.accepted),
            n(&c.accepted) as f64 / started.elapsed().as_secs_f64().max(0.001),
            n(&c.retries),
            n(&c.failed),
            ms(Measure::VisibleCreate),
            ms(Measure::PaidToShipped),
        )
    }

    fn report(&self, elapsed: Duration) -> anyhow::Result<()> {
        let c = &self.counts;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        println!();
        println!(
            "== {} orders in {:.1} s: {} created, {} commands accepted ({:.0}/s), {} conflicts, {} retries, {} failed",
            self.args.orders,
            elapsed.as_secs_f64(),
            n(&c.created),
            n(&c.accepted),
            n(&c.accepted) as f64 / elapsed.as_secs_f64(),
            n(&c.conflicts),
            n(&c.retries),
            n(&c.failed),
        );
        println!(
            "   the saga: {} shipped, {} cancelled after pay; not seen in time: {} commands, {} shipments, {} windows",
            n(&c.shipped),
            n(&c.cancelled_after_pay),
            n(&c.not_visible),
            n(&c.not_shipped),
            n(&c.not_in_windows)
        );
        let totals = self.recorder.totals();
        println!();
        println!(
            "  {:<22} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "ms", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        for (measure, p) in &totals {
            println!(
                "  {:<22} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                measure.label(),
                p.count,
                p.p50_ms,
                p.p90_ms,
                p.p99_ms,
                p.p999_ms,
                p.max_ms
            );
        }
        if let Some(path) = &self.args.summary {
            let summary = Summary {
                run: &self.run,
                rate: self.args.rate,
                orders: self.args.orders,
                elapsed_s: elapsed.as_secs_f64(),
                counts: &self.counts,
                percentiles: totals.iter().map(|(m, p)| (m.label(), *m, *p)).collect(),
                seconds: self.recorder.seconds(),
                samples: self.samples.lock().unwrap_or_else(PoisonError::into_inner).clone(),
            };
            std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("  summary: {}", path.display());
        }
        let lost = n(&c.failed) + n(&c.not_visible) + n(&c.not_shipped) + n(&c.not_in_windows);
        if lost > 0 {
            bail!("{lost} commands failed or were not seen in time (above)");
        }
        Ok(())
    }
}
