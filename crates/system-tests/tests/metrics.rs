//! Every metric the dashboard and the alert rules use (`deploy/observability/metrics.txt`)
//! is exported by the running services, with its catalogued type: orders go through the
//! saga (reserved, shipped, out of stock, released) and a poison record into the dead
//! letters, then every service's `/metrics` is scraped until each name is there.
//!
//! The five services run in one process here, so they share one recorder: this shows a
//! running service exports each metric, not which one.

use std::{collections::BTreeMap, time::Duration};

use orders_system_tests::{DEADLINE, System};

const SERVICES: [&str; 5] =
    ["command-service", "outbox-relay", "projector", "order-processor", "stats-aggregator"];

/// `name → type` of the catalogue, without the series Prometheus makes itself.
fn catalogue() -> BTreeMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/observability/metrics.txt");
    let text = std::fs::read_to_string(path).expect("deploy/observability/metrics.txt");
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (name, kind, exporter) = (fields.next()?, fields.next()?, fields.next()?);
            (exporter != "prometheus").then(|| (name.to_string(), kind.to_string()))
        })
        .collect()
}

/// `name → type` of what the services export (their `# TYPE` lines).
async fn exported(system: &System) -> BTreeMap<String, String> {
    let http = reqwest::Client::new();
    let mut types = BTreeMap::new();
    for service in SERVICES {
        let response = http.get(system.url(service, "/metrics")).send().await.expect("GET /metrics");
        let text = response.text().await.expect("a metrics body");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ")
                && let Some((name, kind)) = rest.split_once(' ')
            {
                types.insert(name.to_string(), kind.to_string());
            }
        }
    }
    types
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalogued_metric_is_exported_with_its_type() {
    let catalogue = catalogue();
    assert!(catalogue.len() > 20, "the catalogue is read: {catalogue:?}");
    let system = System::start().await;
    system.set_stock("SKU-MET", 3).await;

    let shipped = system.create("metrics-user", "EUR", &[("SKU-MET", 1, 500)]).await;
    system.wait_stock("SKU-MET", (2, 1, 0)).await;
    system.pay(&shipped, 500).await;
    system.wait_status(&shipped, "shipped").await;
    let released = system.create("metrics-user", "EUR", &[("SKU-MET", 1, 500)]).await;
    system.wait_stock("SKU-MET", (1, 1, 1)).await;
    system.cancel(&released, "changed my mind").await;
    system.wait_stock("SKU-MET", (2, 0, 1)).await;
    let short = system.create("metrics-user", "EUR", &[("SKU-MET", 9, 500)]).await;
    system.wait_status(&short, "cancelled").await;
    // Every consumer of `orders` dead-letters what it cannot decode.
    system.send_raw_to_orders("poison", b"not an envelope").await;

    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let exported = exported(&system).await;
        let wrong: Vec<String> = catalogue
            .iter()
            .filter(|(name, kind)| exported.get(*name) != Some(*kind))
            .map(|(name, kind)| format!("{name} ({kind}): {:?}", exported.get(name)))
            .collect();
        if wrong.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not exported as catalogued: {wrong:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    system.stop().await;
}
