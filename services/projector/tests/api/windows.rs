//! The windows read model: `order-stats` records (written here in Kafka transactions,
//! as the stats aggregator writes them) into `GET /queries/users/{id}/windows`.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use orders_events::{UserWindowStats, encode_stats};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde_json::{Value, json};

use crate::helpers::{TestApp, World, problem};

const DEADLINE: Duration = Duration::from_secs(60);

fn hour(h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::hours(i64::from(h))
}

/// Counts of a window: (orders, paid, revenue, cancelled, refunded).
type Counts = (u64, u64, i64, u64, i64);

fn window(user: &str, start: u32, currency: &str, counts: Counts, is_final: bool) -> UserWindowStats {
    let (order_count, paid_count, revenue_minor, cancelled_count, refunded_minor) = counts;
    UserWindowStats {
        user_id: user.parse().unwrap(),
        window_start: hour(start),
        window_end: hour(start + 1),
        order_count,
        paid_count,
        revenue_minor,
        currency: currency.parse().unwrap(),
        is_final,
        cancelled_count,
        refunded_minor,
    }
}

/// The JSON the API shows for `window(.., start, currency, counts, is_final)`.
fn shown(start: u32, currency: &str, counts: Counts, is_final: bool) -> Value {
    let (order_count, paid_count, revenue_minor, cancelled_count, refunded_minor) = counts;
    json!({
        "window_start": hour(start).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "window_end": hour(start + 1).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "currency": currency,
        "order_count": order_count,
        "paid_count": paid_count,
        "cancelled_count": cancelled_count,
        "revenue_minor": revenue_minor,
        "refunded_minor": refunded_minor,
        "final": is_final,
    })
}

/// A transactional producer of `order-stats`, as the aggregator's.
struct StatsProducer {
    producer: FutureProducer,
    topic: String,
}

impl StatsProducer {
    fn new(world: &World) -> Self {
        let producer: FutureProducer = world
            .kafka
            .client_config()
            .set("transactional.id", world.kafka.name("stats-producer"))
            .set("enable.idempotence", "true")
            .create()
            .unwrap();
        tokio::task::block_in_place(|| producer.init_transactions(DEADLINE)).unwrap();
        Self { producer, topic: world.stats_topic.clone() }
    }

    /// Sends windows, keyed by their users, in one transaction, committed or aborted.
    async fn windows(&self, windows: Vec<UserWindowStats>, commit: bool) {
        let records: Vec<(&str, Vec<u8>)> =
            windows.iter().map(|w| (w.user_id.as_str(), encode_stats(w))).collect();
        self.transaction(&records, commit).await;
    }

    /// Sends `(key, value)` records in one transaction, committed or aborted.
    async fn transaction(&self, records: &[(&str, Vec<u8>)], commit: bool) {
        self.producer.begin_transaction().unwrap();
        let sends = records.iter().map(|(key, value)| {
            self.producer.send(FutureRecord::to(&self.topic).key(*key).payload(value), DEADLINE)
        });
        for sent in futures::future::join_all(sends).await {
            sent.map_err(|(e, _)| e).unwrap();
        }
        tokio::task::block_in_place(|| {
            if commit {
                self.producer.commit_transaction(DEADLINE)
            } else {
                self.producer.abort_transaction(DEADLINE)
            }
        })
        .unwrap();
    }
}

/// Polls `path` until it answers `expected`.
async fn wait_for(app: &TestApp, path: &str, expected: &Value) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let answer = app.json(path).await;
        if &answer == expected {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "GET {path}:\n{answer:#}\nnot\n{expected:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_window_shows_its_latest_committed_record_newest_first() {
    let world = World::new().await;
    let stats = StatsProducer::new(&world);
    let send = |windows: &[UserWindowStats], commit: bool| stats.windows(windows.to_vec(), commit);

    // Two updates of one window in one transaction (so likely one batch), and a final.
    send(
        &[
            window("wendy", 10, "EUR", (1, 0, 0, 0, 0), false),
            window("wendy", 10, "EUR", (2, 1, 700, 0, 0), false),
            window("wendy", 9, "EUR", (1, 1, 700, 0, 0), true),
        ],
        true,
    )
    .await;
    // Aborted: never shown (a window no committed record has).
    send(&[window("wendy", 13, "EUR", (99, 0, 0, 0, 0), false)], false).await;
    let app = TestApp::spawn(&world, "windows", &[]).await;
    send(
        &[
            window("wendy", 11, "EUR", (1, 0, 0, 0, 0), false),
            window("wendy", 11, "USD", (1, 1, 300, 1, 300), false),
            window("wendy", 10, "EUR", (3, 2, 1500, 1, 500), true),
            window("other", 10, "EUR", (1, 0, 0, 0, 0), false),
        ],
        true,
    )
    .await;
    // Refused: a key that is not the window's user, and a value that does not decode.
    let wendys = encode_stats(&window("wendy", 12, "EUR", (1, 0, 0, 0, 0), false));
    stats.transaction(&[("mallory", wendys), ("wendy", vec![0xff, 0xff, 0x01])], true).await;

    let all = json!({
        "user_id": "wendy",
        "windows": [
            shown(11, "EUR", (1, 0, 0, 0, 0), false),
            shown(11, "USD", (1, 1, 300, 1, 300), false),
            shown(10, "EUR", (3, 2, 1500, 1, 500), true),
            shown(9, "EUR", (1, 1, 700, 0, 0), true),
        ],
        "has_more": false,
    });
    wait_for(&app, "/queries/users/wendy/windows", &all).await;
    let dead = world.dead_letters(2).await;
    // (On two partitions: in no particular order.)
    let reason = |start: &str| dead.iter().find(|(_, h)| h["dlq.reason"].contains(start));
    assert!(reason("the record key `mallory` is not the window's user id `wendy`").is_some(), "{dead:?}");
    let (bytes, _) = reason("undecodable window stats").expect("the undecodable record");
    assert_eq!(bytes, &[0xff, 0xff, 0x01], "the original bytes");
    assert!(dead.iter().all(|(_, h)| h["dlq.origin.topic"] == world.stats_topic), "{dead:?}");

    // Bounds: the windows that overlap [from, to).
    let windows = |query: &str| {
        let app = &app;
        let path = format!("/queries/users/wendy/windows{query}");
        async move { app.json(&path).await["windows"].clone() }
    };
    let starts = |windows: Value| -> Vec<String> {
        windows
            .as_array()
            .unwrap()
            .iter()
            .map(|w| format!("{}/{}", w["window_start"], w["currency"]))
            .collect()
    };
    let at = |h: u32| hour(h).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(windows(&format!("?from={}", at(10))).await.as_array().unwrap().len(), 3);
    assert_eq!(
        starts(windows(&format!("?to={}", at(11))).await),
        [format!("\"{}\"/\"EUR\"", at(10)), format!("\"{}\"/\"EUR\"", at(9))]
    );
    let one = windows(&format!("?from={}&to={}", at(10), at(11))).await;
    assert_eq!(one, json!([shown(10, "EUR", (3, 2, 1500, 1, 500), true)]));
    let half_past = "2026-01-01T10:30:00%2B00:00";
    assert_eq!(
        windows(&format!("?from={half_past}&to={}", at(11))).await,
        one,
        "an offset, escaped, and a bound inside a window"
    );

    // Bad bounds, bad users, unknown users.
    let bad = |query: &str| {
        let app = &app;
        let path = format!("/queries/users/wendy/windows{query}");
        async move { problem(app.get(&path).await, 400).await }
    };
    let body = bad("?from=2026-01-01T10:00:00+00:00").await;
    assert_eq!(body["field"], "from");
    assert!(body["detail"].as_str().unwrap().contains("%2B"), "the hint about `+`: {body}");
    let body = bad(&format!("?from={}&to={}", at(11), at(10))).await;
    assert!(body["detail"].as_str().unwrap().contains("must be before"), "{body}");
    bad(&format!("?from={0}&to={0}", at(10))).await;
    assert_eq!(bad("?to=yesterday").await["field"], "to");
    assert_eq!(bad("?page=2").await["field"], "page");
    assert_eq!(bad(&format!("?from={0}&from={0}", at(10))).await["field"], "from");
    let long = "u".repeat(65);
    problem(app.get(&format!("/queries/users/{long}/windows")).await, 400).await;
    assert_eq!(
        app.json("/queries/users/nobody/windows").await,
        json!({ "user_id": "nobody", "windows": [], "has_more": false })
    );
    assert_eq!(app.json("/queries/users/other/windows").await["windows"].as_array().unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_history_comes_in_pages_of_the_newest_windows() {
    let world = World::new().await;
    let stats = StatsProducer::new(&world);
    let app = TestApp::spawn(&world, "pages", &[]).await;
    // 334 hours in three currencies: 1,002 windows, so that a page of 1,000 would end
    // inside the oldest hour.
    let hours = 334;
    let windows: Vec<UserWindowStats> = (0..hours)
        .flat_map(|h| {
            ["EUR", "GBP", "USD"].map(|currency| window("busy", h, currency, (1, 0, 0, 0, 0), true))
        })
        .collect();
    assert!(windows.len() > projector::query::Queries::MAX_WINDOWS);
    stats.windows(windows, true).await;

    let at = |h: u32| json!(hour(h).to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let first = loop {
        let answer = app.json("/queries/users/busy/windows").await;
        if answer["windows"][0]["window_start"] == at(hours - 1) {
            break answer;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the last window never showed: {:?}",
            answer["windows"][0]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(first["has_more"], true);
    let mut seen: Vec<Value> = first["windows"].as_array().unwrap().clone();
    assert!(seen.len() <= projector::query::Queries::MAX_WINDOWS);
    assert_eq!(seen.last().unwrap()["window_start"], at(1), "the page ends with a whole hour");
    let oldest = seen.last().unwrap()["window_start"].as_str().unwrap().to_string();
    let rest = app.json(&format!("/queries/users/busy/windows?to={oldest}")).await;
    assert_eq!(rest["has_more"], false);
    seen.extend(rest["windows"].as_array().unwrap().iter().cloned());
    let keys: std::collections::BTreeSet<(String, String)> = seen
        .iter()
        .map(|w| {
            (w["window_start"].as_str().unwrap().to_string(), w["currency"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!((seen.len(), keys.len()), (1002, 1002), "every window once, over the two pages");
    app.stop().await;
}
