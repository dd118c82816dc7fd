//! The query API: every endpoint, pagination edges, errors and read-your-writes.

use std::time::{Duration, Instant};

use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{ChildApp, Fate, TestApp, World, at, interleave, order_events, problem};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_shows_its_whole_state_and_history() {
    let mut world = World::new().await;
    let shipped = order_events("ann", 2, Fate::Shipped, at(0));
    let cancelled = order_events("ann", 1, Fate::CancelledPaid, at(5));
    world.produce(&interleave(&[shipped.clone(), cancelled.clone()])).await;
    let app = TestApp::spawn(&world, "q", &[]).await;
    world.wait_caught_up().await;

    let id = shipped[0].order_id;
    let response = app.get(&format!("/queries/orders/{id}")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["etag"], "\"3\"");
    assert!(response.headers().get("x-view-stale").is_none());
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["order_id"], id.to_string());
    assert_eq!(view["user_id"], "ann");
    assert_eq!(view["status"], "shipped");
    assert_eq!(view["currency"], "EUR");
    assert_eq!(view["total_minor"], 1000);
    assert_eq!(
        view["items"],
        serde_json::json!([{ "sku": "SKU-1", "quantity": 2, "unit_price_minor": 500 }])
    );
    assert_eq!(view["created_at"], "2025-03-01T10:00:00Z");
    assert_eq!(view["updated_at"], "2025-03-01T10:01:00Z");
    assert_eq!(view["payment"]["payment_id"], format!("pay-{id}"));
    assert_eq!(view["payment"]["amount_minor"], 1000);
    assert_eq!(view["shipment"]["tracking_number"], "TN-1");
    assert_eq!(view["cancellation"], Value::Null);
    let types: Vec<&str> =
        view["history"].as_array().unwrap().iter().map(|h| h["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["OrderCreated", "OrderPaid", "OrderShipped"]);
    assert_eq!(view["history"][2]["version"], 3);

    let view = app.json(&format!("/queries/orders/{}", cancelled[0].order_id)).await;
    assert_eq!(view["status"], "cancelled");
    assert_eq!(view["cancellation"]["reason"], "changed my mind");
    assert_eq!(view["payment"]["amount_minor"], 500, "the payment stays in the history of the order");

    let body = problem(app.get(&format!("/queries/orders/{}", Uuid::now_v7())).await, 404).await;
    assert_eq!(body["type"], "/problems/not-found");
    let body = problem(app.get("/queries/orders/not-a-uuid").await, 400).await;
    assert_eq!(body["field"], "id");
    let body = problem(app.get(&format!("/queries/orders/{id}?version=3")).await, 400).await;
    assert_eq!(body["field"], "version");
    problem(app.get("/queries/nothing-here").await, 404).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_orders_come_newest_first_in_stable_pages() {
    let mut world = World::new().await;
    // Seven orders; three share one creation time, so the order id breaks the tie.
    let times = [at(1), at(2), at(3), at(3), at(3), at(4), at(5)];
    let orders: Vec<_> = times.iter().map(|t| order_events("bea", 1, Fate::Paid, *t)).collect();
    world.produce(&interleave(&orders)).await;
    world.produce(&interleave(&[order_events("other", 1, Fate::Pending, at(9))])).await;
    let app = TestApp::spawn(&world, "q", &[]).await;
    world.wait_caught_up().await;

    let mut expected: Vec<(chrono::DateTime<chrono::Utc>, Uuid)> =
        orders.iter().map(|events| (events[0].occurred_at, events[0].order_id.as_uuid())).collect();
    expected.sort_by(|a, b| b.cmp(a));
    let expected: Vec<String> = expected.iter().map(|(_, id)| id.to_string()).collect();

    let mut seen = Vec::new();
    for (page, size, more) in [(1, 3, true), (2, 3, true), (3, 3, false)] {
        let body = app.json(&format!("/queries/users/bea/orders?page={page}&page_size={size}")).await;
        assert_eq!(body["total"], 7, "{body}");
        assert_eq!(body["page"], page);
        assert_eq!(body["page_size"], size);
        assert_eq!(body["has_more"], more, "{body}");
        for order in body["orders"].as_array().unwrap() {
            assert_eq!(order["status"], "paid");
            assert_eq!(order["version"], 2);
            seen.push(order["order_id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(seen, expected, "pages are newest first, ties by order id, none repeated or missing");
    let again = app.json("/queries/users/bea/orders?page=2&page_size=3").await;
    let ids: Vec<&str> =
        again["orders"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap()).collect();
    assert_eq!(ids, expected[3..6], "the same page twice is the same");

    let past = app.json("/queries/users/bea/orders?page=4&page_size=3").await;
    assert_eq!(past["orders"], serde_json::json!([]));
    assert_eq!(past["has_more"], false);
    let defaults = app.json("/queries/users/bea/orders").await;
    assert_eq!((&defaults["page"], &defaults["page_size"]), (&1.into(), &20.into()));
    assert_eq!(defaults["orders"].as_array().unwrap().len(), 7);
    let largest = app.json("/queries/users/bea/orders?page_size=100").await;
    assert_eq!(largest["orders"].as_array().unwrap().len(), 7);

    for (query, field) in [
        ("page=0", "page"),
        ("page=abc", "page"),
        ("page=-1", "page"),
        ("page_size=0", "page_size"),
        ("page_size=101", "page_size"),
        ("page=1&page=2", "page"),
        ("sort=asc", "sort"),
    ] {
        let body = problem(app.get(&format!("/queries/users/bea/orders?{query}")).await, 400).await;
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    let body = problem(app.get("/queries/users/nobody/orders").await, 404).await;
    assert_eq!(body["type"], "/problems/not-found");
    let long = "x".repeat(65);
    let body = problem(app.get(&format!("/queries/users/{long}/orders")).await, 400).await;
    assert_eq!(body["field"], "user_id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_stats_count_orders_by_status_and_spending() {
    let mut world = World::new().await;
    let orders = vec![
        order_events("cy", 1, Fate::Pending, at(0)),
        order_events("cy", 2, Fate::Paid, at(1)),
        order_events("cy", 3, Fate::Shipped, at(2)),
        order_events("cy", 4, Fate::CancelledPaid, at(3)),
        order_events("cy", 1, Fate::CancelledPending, at(4)),
        order_events("dee", 1, Fate::CancelledPaid, at(5)),
    ];
    world.produce(&interleave(&orders)).await;
    let app = TestApp::spawn(&world, "q", &[]).await;
    world.wait_caught_up().await;

    let stats = app.json("/queries/users/cy/stats").await;
    assert_eq!(
        stats,
        serde_json::json!({
            "user_id": "cy",
            "order_count": 5,
            "paid_count": 2,
            "orders_by_status": { "pending": 1, "paid": 1, "shipped": 1, "cancelled": 2 },
            "spent": [{
                "currency": "EUR",
                "paid_orders": 2,
                "total_spent_minor": 2500,
                "average_order_value_minor": 1250
            }]
        })
    );
    let stats = app.json("/queries/users/dee/stats").await;
    assert_eq!(stats["paid_count"], 0);
    assert_eq!(stats["spent"], serde_json::json!([]), "a cancelled payment is not spending");

    problem(app.get("/queries/users/nobody/stats").await, 404).await;
    let body = problem(app.get("/queries/users/cy/stats?page=1").await, 400).await;
    assert_eq!(body["field"], "page");
    problem(app.get("/queries/users/%20/stats").await, 400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_waits_for_the_view_or_says_it_is_stale() {
    let mut world = World::new().await;
    let events = order_events("eve", 1, Fate::Shipped, at(0));
    let id = events[0].order_id;
    world.produce(&interleave(&[events[..2].to_vec()])).await;
    let app = TestApp::spawn(&world, "q", &["--min-version-timeout", "1500ms"]).await;
    world.wait_caught_up().await;

    // Reached: answered as soon as the view has it.
    let view = app.json(&format!("/queries/orders/{id}?min_version=2")).await;
    assert_eq!(view["version"], 2);

    // Not reached in time: the view as it is, marked stale.
    let started = Instant::now();
    let response = app.get(&format!("/queries/orders/{id}?min_version=3")).await;
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-view-stale"], "true");
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.headers()["etag"], "\"2\"");
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["version"], 2);

    // An order the read model has not seen yet.
    let unseen = Uuid::now_v7();
    let response = app.get(&format!("/queries/orders/{unseen}?min_version=1")).await;
    assert_eq!(response.headers()["x-view-stale"], "true");
    let body = problem(response, 404).await;
    assert_eq!(body["type"], "/problems/not-yet-visible");

    // The event arrives while the query waits: answered fresh, before the deadline.
    let waiting = {
        let (http, url) = (app.http.clone(), app.url(&format!("/queries/orders/{id}?min_version=3")));
        tokio::spawn(async move {
            let started = Instant::now();
            let response = http.get(url).send().await.unwrap();
            (response.status(), response.headers().get("x-view-stale").is_some(), started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    world.produce(&interleave(&[events[2..].to_vec()])).await;
    let (status, stale, _) = waiting.await.unwrap();
    assert_eq!((status.as_u16(), stale), (200, false));

    for bad in ["-1", "abc", "1.5", ""] {
        let body = problem(app.get(&format!("/queries/orders/{id}?min_version={bad}")).await, 400).await;
        assert_eq!(body["field"], "min_version");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_min_version_waiter_is_not_woken_by_commits_of_other_orders() {
    let mut world = World::new().await;
    let events = order_events("wake-a", 1, Fate::Paid, at(0));
    let id = events[0].order_id;
    world.produce(&interleave(&[events[..1].to_vec()])).await;
    // A process of its own: the metrics are process-wide.
    let app = ChildApp::spawn(&world, "wake", &[("MIN_VERSION_TIMEOUT", "30s")]).await;
    world.wait_caught_up().await;

    let started = Instant::now();
    let waiting = {
        let (http, url) = (app.http.clone(), app.url(&format!("/queries/orders/{id}?min_version=2")));
        tokio::spawn(async move {
            let response = http.get(url).send().await.unwrap();
            (response.status(), response.headers().get("x-view-stale").is_some())
        })
    };
    app.wait_for_metric("projector_min_version_waiters", 1.0).await;
    // Forty batches of other orders commit while it waits.
    for i in 0..40 {
        world.produce(&interleave(&[order_events("wake-b", 1, Fate::Pending, at(i))[..1].to_vec()])).await;
        world.wait_caught_up().await;
    }
    assert!(!waiting.is_finished(), "the waiter answered before its order reached version 2");
    let reads = app.metric("projector_min_version_reads_total").await.expect("reads are counted");
    // Its own re-reads only: a handful on the backoff, then one a second.
    let bound = 6.0 + started.elapsed().as_secs_f64();
    assert!(reads <= bound, "{reads} reads in {:?}: woken by other orders' commits", started.elapsed());

    world.produce(&interleave(&[events[1..].to_vec()])).await;
    let (status, stale) = tokio::time::timeout(Duration::from_secs(20), waiting).await.unwrap().unwrap();
    assert_eq!((status.as_u16(), stale), (200, false));
    app.wait_for_metric("projector_min_version_waiters", 0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_of_an_unknown_id_answers_at_once_when_every_partition_is_past_it() {
    let mut world = World::new().await;
    // Thirty orders (on every partition) created a minute after the unknown id below.
    let later = chrono::Utc::now() + chrono::Duration::seconds(60);
    let orders: Vec<_> = (0..30)
        .map(|i| order_events("clock", 1, Fate::Pending, later + chrono::Duration::seconds(i)))
        .collect();
    world.produce(&interleave(&orders)).await;
    let app = TestApp::spawn(&world, "clock", &["--min-version-timeout", "30s"]).await;
    world.wait_caught_up().await;

    let unknown = Uuid::now_v7();
    let started = Instant::now();
    let response = app.get(&format!("/queries/orders/{unknown}?min_version=1")).await;
    assert!(started.elapsed() < Duration::from_secs(10), "waited {:?}", started.elapsed());
    let body = problem(response, 404).await;
    assert_eq!(body["type"], "/problems/not-found", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_version_waiters_over_the_cap_answer_at_once_with_the_staleness_visible() {
    let mut world = World::new().await;
    let events = order_events("capped", 1, Fate::Paid, at(0));
    let id = events[0].order_id;
    world.produce(&interleave(&[events[..1].to_vec()])).await;
    // A process of its own: the metrics are process-wide.
    let env = [("MIN_VERSION_TIMEOUT", "30s"), ("MIN_VERSION_MAX_WAITERS", "1")];
    let app = ChildApp::spawn(&world, "cap", &env).await;
    world.wait_caught_up().await;

    let url = format!("/queries/orders/{id}?min_version=2");
    let first = {
        let (http, url) = (app.http.clone(), app.url(&url));
        tokio::spawn(async move { http.get(url).send().await.unwrap().status() })
    };
    app.wait_for_metric("projector_min_version_waiters", 1.0).await;
    let started = Instant::now();
    let response = app.get(&url).await;
    assert!(started.elapsed() < Duration::from_secs(10), "waited {:?}", started.elapsed());
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-view-stale"], "true");
    assert_eq!(response.headers()["retry-after"], "1");
    let view: Value = response.json().await.unwrap();
    assert_eq!(view["version"], 1);
    assert_eq!(app.metric("projector_min_version_refused_total").await, Some(1.0));

    world.produce(&interleave(&[events[1..].to_vec()])).await;
    let status = tokio::time::timeout(Duration::from_secs(20), first).await.unwrap().unwrap();
    assert_eq!(status, 200);
}
