//! The windows end to end: orders created, paid and cancelled through the command API
//! show up in `GET /queries/users/{id}/windows`, through the relay, `orders`, the stats
//! aggregator's two stages, `order-stats` and the projector.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use orders_system_tests::System;
use serde_json::{Value, json};

/// A window's counts: orders, paid, revenue, cancelled, refunded.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    orders: u64,
    paid: u64,
    revenue: i64,
    cancelled: u64,
    refunded: i64,
}

/// The start of the hour-long window (aligned to the epoch) that `at` falls in.
fn window_start(at: &Value) -> DateTime<Utc> {
    let at: DateTime<Utc> = at.as_str().and_then(|s| s.parse().ok()).expect("an RFC 3339 occurred_at");
    let seconds = at.timestamp().div_euclid(3600) * 3600;
    DateTime::from_timestamp(seconds, 0).expect("in range")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_created_paid_and_cancelled_over_http_show_up_in_the_users_windows() {
    let system = System::start().await;
    let user = "window-watcher";
    // No tracked SKU: the saga leaves these orders alone.
    let paid = system.create(user, "EUR", &[("SKU-W1", 2, 500)]).await;
    let refunded = system.create(user, "EUR", &[("SKU-W2", 1, 300)]).await;
    let dropped = system.create(user, "EUR", &[("SKU-W3", 1, 700)]).await;
    let dollars = system.create(user, "USD", &[("SKU-W4", 1, 250)]).await;
    system.create("someone-else", "EUR", &[("SKU-W1", 1, 500)]).await;
    system.pay(&paid, 1000).await;
    system.pay(&refunded, 300).await;
    system.cancel(&refunded, "changed my mind").await;
    system.cancel(&dropped, "found it cheaper").await;

    // What the windows must hold, from the events as command-service recorded them
    // (their occurred_at is the event time the aggregator windows by).
    let mut expected: BTreeMap<(DateTime<Utc>, &str), Counts> = BTreeMap::new();
    for (order, currency) in [(&paid, "EUR"), (&refunded, "EUR"), (&dropped, "EUR"), (&dollars, "USD")] {
        let mut amount_paid = 0;
        for event in system.events(order).await {
            let counts = expected.entry((window_start(&event["occurred_at"]), currency)).or_default();
            match event["payload"]["type"].as_str().expect("an event type") {
                "OrderCreated" => counts.orders += 1,
                "OrderPaid" => {
                    amount_paid = event["payload"]["amount_minor"].as_i64().expect("an amount");
                    counts.paid += 1;
                    counts.revenue += amount_paid;
                }
                "OrderCancelled" => {
                    counts.cancelled += 1;
                    counts.refunded += amount_paid;
                }
                other => panic!("unexpected event {other} of order {order}"),
            }
        }
    }
    let hour = chrono::Duration::hours(1);
    let mut newest_first: Vec<_> = expected.iter().collect();
    newest_first.sort_by_key(|((start, currency), _)| (std::cmp::Reverse(*start), *currency));
    let windows: Vec<Value> = newest_first
        .into_iter()
        .map(|((start, currency), c)| {
            json!({
                "window_start": start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "window_end": (*start + hour).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "currency": currency,
                "order_count": c.orders,
                "paid_count": c.paid,
                "cancelled_count": c.cancelled,
                "revenue_minor": c.revenue,
                "refunded_minor": c.refunded,
                "final": false,
            })
        })
        .collect();
    let totals = expected.values().fold(Counts::default(), |t, c| Counts {
        orders: t.orders + c.orders,
        paid: t.paid + c.paid,
        revenue: t.revenue + c.revenue,
        cancelled: t.cancelled + c.cancelled,
        refunded: t.refunded + c.refunded,
    });
    assert_eq!(
        (totals.orders, totals.paid, totals.revenue, totals.cancelled, totals.refunded),
        (4, 2, 1300, 2, 300),
        "the scenario itself"
    );

    let path = format!("/queries/users/{user}/windows");
    let answer = json!({ "user_id": user, "windows": windows, "has_more": false });
    let last =
        system.wait_for(projector::SERVICE, &path, |status, body| status == 200 && body == &answer).await;
    assert_eq!(last, answer);
    let theirs = system
        .wait_for(projector::SERVICE, "/queries/users/someone-else/windows", |_, body| {
            body["windows"].as_array().is_some_and(|w| !w.is_empty())
        })
        .await;
    assert_eq!(theirs["windows"][0]["order_count"], 1, "another user's own windows: {theirs}");
    system.stop().await;
}
