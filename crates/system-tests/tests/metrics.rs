//! Every metric the dashboard and the alert rules use (`deploy/observability/metrics.txt`)
//! is exported by the running services, with its catalogued type and labels: orders go through the
//! saga (reserved, shipped, out of stock, released) and a poison record into the dead
//! letters, then every service's `/metrics` is scraped until each name is there.
//!
//! The five services run in one process here, so they share one recorder: this shows a
//! running service exports each metric, not which one.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use orders_system_tests::{DEADLINE, System};

const SERVICES: [&str; 5] =
    ["command-service", "outbox-relay", "projector", "order-processor", "stats-aggregator"];

/// A metric's type and label names.
type Shape = (String, BTreeSet<String>);

/// `name → shape` of the catalogue, without the series Prometheus makes itself.
fn catalogue() -> BTreeMap<String, Shape> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/observability/metrics.txt");
    let text = std::fs::read_to_string(path).expect("deploy/observability/metrics.txt");
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (name, kind, exporter, labels) =
                (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
            let labels = labels.split(',').filter(|l| *l != "-").map(str::to_string).collect();
            (exporter != "prometheus").then(|| (name.to_string(), (kind.to_string(), labels)))
        })
        .collect()
}

/// The label names of one sample line (`name{a="x",b="y"} 1`), label values may hold
/// any character (route patterns hold braces).
fn label_names(line: &str) -> Option<(&str, BTreeSet<String>)> {
    let (name, rest) = match line.find(['{', ' ']) {
        Some(at) => line.split_at(at),
        None => return None,
    };
    let mut labels = BTreeSet::new();
    if let Some(rest) = rest.strip_prefix('{') {
        let (mut label, mut quoted, mut escaped) = (String::new(), false, false);
        for c in rest.chars() {
            match (quoted, escaped, c) {
                (true, true, _) => escaped = false,
                (true, false, '\\') => escaped = true,
                (true, false, '"') => quoted = false,
                (true, false, _) => {}
                (false, _, '"') => quoted = true,
                (false, _, '=') => {
                    labels.insert(std::mem::take(&mut label));
                }
                (false, _, ',') => {}
                (false, _, '}') => break,
                (false, _, c) => label.push(c),
            }
        }
    }
    Some((name, labels))
}

/// `name → shape` of what the services export: their `# TYPE` lines and the label names
/// of their samples (a histogram's `_bucket`, `_sum` and `_count` as the histogram, `le`
/// left out).
async fn exported(system: &System) -> BTreeMap<String, Shape> {
    let http = reqwest::Client::new();
    let mut shapes: BTreeMap<String, Shape> = BTreeMap::new();
    for service in SERVICES {
        let response = http.get(system.url(service, "/metrics")).send().await.expect("GET /metrics");
        let text = response.text().await.expect("a metrics body");
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ")
                && let Some((name, kind)) = rest.split_once(' ')
            {
                shapes.entry(name.to_string()).or_default().0 = kind.to_string();
            }
        }
        for (name, mut labels) in text.lines().filter(|l| !l.starts_with('#')).filter_map(label_names) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix).filter(|b| shapes.get(*b).is_some_and(|s| s.0 == "histogram"))
                })
                .unwrap_or(name);
            labels.remove("le");
            shapes.entry(base.to_string()).or_default().1.extend(labels);
        }
    }
    shapes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_catalogued_metric_is_exported_with_its_type_and_labels() {
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
            .filter(|(name, shape)| exported.get(*name) != Some(*shape))
            .map(|(name, shape)| format!("{name}: catalogued {shape:?}, exported {:?}", exported.get(name)))
            .collect();
        if wrong.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not exported as catalogued: {wrong:#?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    system.stop().await;
}

#[test]
fn label_names_are_read_whatever_the_values_hold() {
    let (name, labels) =
        label_names(r#"http_requests_total{method="GET",route="/queries/orders/{id}",status="200"} 3"#)
            .expect("a sample");
    assert_eq!(name, "http_requests_total");
    assert_eq!(labels, ["method", "route", "status"].map(String::from).into());
    let (name, labels) = label_names(r#"odd{a="x\",}=",b="y"} 1"#).expect("a sample");
    assert_eq!((name, labels), ("odd", ["a", "b"].map(String::from).into()));
    assert_eq!(label_names("plain 1").map(|(n, l)| (n, l.len())), Some(("plain", 0)));
}
