//! `projector rebuild`: fresh tables from the start of the topic, swapped in atomically
//! while the live ones serve, equal to them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use orders_runtime::CancellationToken;

use crate::helpers::{
    Expected, Fate, TestApp, World, at, interleave, order_events, reference_dump, workload,
};

async fn table_oid(world: &World) -> i64 {
    world.scalar("SELECT 'read_model.order_views'::regclass::oid::bigint").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_gives_views_equal_to_the_live_ones() {
    let mut world = World::new().await;
    let orders = workload(200, 15);
    world.produce(&interleave(&orders)).await;
    let app = TestApp::spawn(&world, "live", &[]).await;
    world.wait_caught_up().await;
    let live = world.dump().await;
    let live_table = table_oid(&world).await;

    let report =
        projector::rebuild::rebuild(&world.config("rebuild", &[]), &CancellationToken::new()).await.unwrap();
    assert_eq!(report.positions.values().map(|p| p.unwrap_or(0)).sum::<i64>(), world.produced());
    assert_ne!(table_oid(&world).await, live_table, "the tables were swapped");
    assert_eq!(world.dump().await, live);
    assert_eq!(world.scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'read_model%'").await, 1);

    // The live projector goes on, now writing the new tables.
    let more = workload(20, 15);
    world.produce(&interleave(&more)).await;
    world.wait_caught_up().await;
    let all: Vec<_> = orders.iter().chain(&more).cloned().collect();
    Expected::new(&all).check(&app.api()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_under_load_hands_over_without_losing_or_doubling_events() {
    let mut world = World::new().await;
    let first = workload(300, 20);
    world.produce(&interleave(&first)).await;
    let app = TestApp::spawn(&world, "live", &[]).await;
    world.wait_caught_up().await;

    // Queries keep answering during the rebuild and the swap.
    let probe = first[0][0].order_id;
    let answered = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let prober = tokio::spawn({
        let (api, answered, stop) = (app.api(), Arc::clone(&answered), stop.clone());
        async move {
            while !stop.is_cancelled() {
                let response =
                    api.http.get(format!("{}/queries/orders/{probe}", api.base)).send().await.unwrap();
                assert_eq!(response.status(), 200, "a query failed during the rebuild");
                answered.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });

    // Orders keep coming while the rebuild runs.
    let second = workload(300, 20);
    let records = interleave(&second);
    let config = world.config("rebuild", &[]);
    let rebuild =
        tokio::spawn(async move { projector::rebuild::rebuild(&config, &CancellationToken::new()).await });
    for chunk in records.chunks(40) {
        world.produce(chunk).await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    rebuild.await.unwrap().unwrap();
    world.wait_caught_up().await;
    stop.cancel();
    prober.await.unwrap();
    assert!(answered.load(Ordering::Relaxed) > 10);

    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    Expected::new(&all).check(&app.api()).await;
    assert_eq!(world.dump().await, reference_dump(&world).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_carries_the_parked_events_over_and_their_gaps_close_after_the_swap() {
    let mut world = World::new().await;
    let orders = workload(30, 5);
    world.produce(&interleave(&orders)).await;
    let early = order_events("parked", 1, Fate::Paid, at(0));
    let gapped = order_events("parked", 1, Fate::Shipped, at(1));
    world.produce(&interleave(&[vec![early[1].clone()], vec![gapped[0].clone(), gapped[2].clone()]])).await;
    let app = TestApp::spawn(&world, "live", &[]).await;
    world.wait_caught_up().await;
    let live = world.dump().await;
    assert_eq!(live.iter().filter(|row| row.starts_with("parked_events")).count(), 2, "{live:#?}");

    projector::rebuild::rebuild(&world.config("rebuild", &[]), &CancellationToken::new()).await.unwrap();
    assert_eq!(world.dump().await, live, "the rebuilt read model parks what the live one parked");

    // The live projector, now on the rebuilt tables, closes the gaps from their rows.
    world.produce(&interleave(&[vec![early[0].clone()], vec![gapped[1].clone()]])).await;
    world.wait_caught_up().await;
    let view = app.json(&format!("/queries/orders/{}", early[0].order_id)).await;
    assert_eq!((&view["version"], &view["status"]), (&2.into(), &"paid".into()), "{view}");
    let view = app.json(&format!("/queries/orders/{}", gapped[0].order_id)).await;
    assert_eq!((&view["version"], &view["status"]), (&3.into(), &"shipped".into()), "{view}");
    assert_eq!(world.scalar("SELECT count(*) FROM read_model.parked_events").await, 0);
    let mut all = orders.clone();
    all.push(early.clone());
    all.push(gapped.clone());
    Expected::new(&all).check(&app.api()).await;
    assert_eq!(world.dump().await, reference_dump(&world).await);
}
