//! `orders-load reconcile`: everything the platform derived, compared with its source,
//! the event store.
//!
//! - **The read model** (the projector): each order's view has its history's version,
//!   status, user, currency, total and shipment, and waits for no missing version; no
//!   view without a history. Each user's statistics are those of their orders.
//! - **The saga** (the order processor): reservations, shipments and stock as the orders'
//!   events imply them (see [`compare::saga`]).
//! - **The windows** (the stats aggregator, through `order-stats` and the projector):
//!   recomputed from the events in tumbling windows of `--window-size`, they are the
//!   query API's windows, every count and sum.
//! - **The `orders` topic** (the outbox relay): every stored event is on it, each order's
//!   on one partition in version order; nothing on it the store lacks. Records published
//!   again (at least once) and records that are not events (poison) are counted, not
//!   differences.
//! - **The outbox**: nothing left unpublished, nothing quarantined.
//!
//! The derived copies catch up asynchronously, so the check runs again every two
//! seconds until it finds nothing or `--settle` runs out; then it prints each
//! difference and fails.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use orders_postgres::DatabaseUrl;

pub mod compare;
mod read;

pub use read::read_topic;

use compare::Difference;

/// The settings of a reconciliation.
#[derive(Debug, Clone, clap::Args)]
pub struct ReconcileArgs {
    /// The command side's database (event store and outbox).
    #[arg(
        long,
        env = "WRITE_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:15432/orders_write",
        value_parser = orders_runtime::postgres::DatabaseUrlParser,
        hide_env_values = true
    )]
    write_database_url: DatabaseUrl,
    /// The projector's database (read model and windows).
    #[arg(
        long,
        env = "READ_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:15432/orders_read",
        value_parser = orders_runtime::postgres::DatabaseUrlParser,
        hide_env_values = true
    )]
    read_database_url: DatabaseUrl,
    /// The order processor's database (stock, reservations, shipments).
    #[arg(
        long,
        env = "PROCESSOR_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:15432/order_processor",
        value_parser = orders_runtime::postgres::DatabaseUrlParser,
        hide_env_values = true
    )]
    processor_database_url: DatabaseUrl,
    /// Kafka's bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = "127.0.0.1:9092")]
    kafka_bootstrap_servers: String,
    /// The topic of the order events.
    #[arg(long, env = "ORDERS_TOPIC", default_value = "orders")]
    orders_topic: String,
    /// The stats aggregator's window size (tumbling windows).
    #[arg(long, env = "WINDOW_SIZE", default_value = "1h", value_parser = crate::parse_duration)]
    window_size: Duration,
    /// How long the derived copies may take to catch up before a difference counts.
    #[arg(long, env = "RECONCILE_SETTLE", default_value = "120s", value_parser = crate::parse_duration)]
    settle: Duration,
}

/// What one pass counted, for the summary.
#[derive(Debug, Default)]
struct Counted {
    orders: usize,
    events: usize,
    views: usize,
    users: usize,
    windows: usize,
    reservations: usize,
    shipments: usize,
    records: usize,
    extras: compare::TopicExtras,
}

/// Runs passes until one finds nothing (then prints what it checked) or `--settle` runs
/// out (then prints each difference of the last pass and fails).
pub async fn run(args: ReconcileArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + args.settle;
    loop {
        // A server that does not answer yet (just restarted, a partition without a leader)
        // is waited for, as a difference is.
        let (differences, counted) = match pass(&args).await {
            Ok(pass) => pass,
            Err(e) if Instant::now() + Duration::from_secs(2) <= deadline => {
                eprintln!("[reconcile] cannot read everything yet ({e:#}); trying again");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if differences.is_empty() {
            print_summary(&args, &counted);
            return Ok(());
        }
        if Instant::now() + Duration::from_secs(2) > deadline {
            report(&differences);
            bail!(
                "{} differences after waiting {:?} for the system to settle",
                differences.len(),
                args.settle
            );
        }
        eprintln!(
            "[reconcile] {} differences (the first: {}: {}); waiting for the system to settle",
            differences.len(),
            differences[0].area,
            differences[0].what
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn pass(args: &ReconcileArgs) -> anyhow::Result<(Vec<Difference>, Counted)> {
    let write = read::connect(&args.write_database_url).await?;
    let read_db = read::connect(&args.read_database_url).await?;
    let processor = read::connect(&args.processor_database_url).await?;

    // The derived copies first, then the source: a copy can then only be behind what is
    // read of the source, which the next pass sees caught up, never ahead of it.
    let views = read::views(&read_db).await?;
    let stats = read::user_stats(&read_db).await?;
    let windows = read::windows(&read_db).await?;
    let saga = read::saga(&processor).await?;
    let (bootstrap, topic) = (args.kafka_bootstrap_servers.clone(), args.orders_topic.clone());
    let records =
        tokio::task::spawn_blocking(move || read::topic(&bootstrap, &topic, Duration::from_secs(120)))
            .await
            .context("the topic reader")??;
    let (pending, quarantined) = read::outbox(&write).await?;
    let (histories, mut differences) = read::histories(&write).await?;

    let (orders, replay) = compare::replay(&histories);
    differences.extend(replay);
    differences.extend(compare::read_model(&orders, &views));
    differences.extend(compare::user_stats(&orders, &stats));
    differences.extend(compare::saga(&orders, &saga));
    let size_ms = i64::try_from(args.window_size.as_millis()).context("the window size")?;
    differences.extend(compare::windows(&compare::expected_windows(&histories, size_ms), &windows));
    let (on_topic, extras) = compare::topic(&histories, &records);
    differences.extend(on_topic);
    if pending > 0 {
        differences
            .push(Difference { area: "outbox", what: format!("{pending} rows are not published yet") });
    }
    if quarantined > 0 {
        differences.push(Difference {
            area: "outbox",
            what: format!("{quarantined} rows are quarantined (see the relay's log and outbox_quarantine)"),
        });
    }
    let counted = Counted {
        orders: histories.len(),
        events: histories.values().map(Vec::len).sum(),
        views: views.len(),
        users: stats.len(),
        windows: windows.len(),
        reservations: saga.reservations.len(),
        shipments: saga.shipments.len(),
        records: records.len(),
        extras,
    };
    Ok((differences, counted))
}

fn print_summary(args: &ReconcileArgs, c: &Counted) {
    println!("== Reconciliation: no difference");
    println!("  event store          {} orders, {} events", c.orders, c.events);
    println!("  read model           {} views, statistics of {} users and currencies", c.views, c.users);
    println!("  saga                 {} reservations, {} shipments", c.reservations, c.shipments);
    println!(
        "  windows              {} windows of {:?}, recomputed from the events",
        c.windows, args.window_size
    );
    println!(
        "  topic {:<14} {} records: every event once or more, in version order; {} published again, {} not events (dead-lettered by the consumers)",
        args.orders_topic, c.records, c.extras.republished, c.extras.not_events
    );
    println!("  outbox               empty, nothing quarantined");
}

/// Prints the differences, grouped by area, at most 50 of each.
fn report(differences: &[Difference]) {
    let mut by_area: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for d in differences {
        by_area.entry(d.area).or_default().push(&d.what);
    }
    println!("== Reconciliation: {} differences", differences.len());
    for (area, list) in by_area {
        println!("  {area}: {}", list.len());
        for what in list.iter().take(50) {
            println!("    {what}");
        }
        if list.len() > 50 {
            println!("    ... and {} more", list.len() - 50);
        }
    }
}
