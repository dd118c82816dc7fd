//! A row the relay can never publish, through the binary: counted, the relay still
//! ready, and the `quarantine` subcommand to list, re-queue and discard it.

use std::time::Duration;

use orders_testkit::sequence::Sequences;
use tokio::time::Instant;
use uuid::Uuid;

use crate::helpers::{World, metric, quarantine_command, read_until};

#[tokio::test]
async fn a_quarantined_row_is_counted_and_listed_requeued_and_discarded_by_the_subcommand() {
    let world = World::new().await;
    let mut strict = world.env();
    strict.push(("KAFKA_PROPERTIES".into(), "message.max.bytes=100000".into()));
    strict.push(("QUARANTINE_AFTER_ATTEMPTS".into(), "2".into()));
    let mut relay = world.start_relay(&strict).await;
    let (kept, dropped, fine) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    world.append_event(world.oversized(kept, 1)).await;
    world.append_event(world.oversized(dropped, 1)).await;
    world.append(kept, 2).await;
    world.append(dropped, 2).await;
    world.append(fine, 1).await;

    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&relay, "outbox_quarantined_total").await.unwrap_or(0.0) < 2.0 {
        assert!(Instant::now() < deadline, "not quarantined; logs:\n{}", relay.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    relay.wait_for("/readyz", 200, Duration::from_secs(10)).await;
    // The gauge of the quarantine, refreshed with the backlog gauges (every 5 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&relay, "outbox_quarantine_rows").await != Some(2.0) {
        assert!(Instant::now() < deadline, "the quarantine gauge does not show the rows");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reader = world.reader();
    let mut seen = Sequences::default();
    read_until(&reader, &mut seen, 1, Duration::from_secs(60)).await;
    assert_eq!(seen.highest(fine.to_string().as_bytes()), 1, "the other order goes on");

    let (code, listed) = quarantine_command(&strict, &["list"]).await;
    assert_eq!(code, 0, "{listed}");
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "{listed}");
    assert!(lines[0].contains(&format!("key={kept}")) && lines[0].contains("waiting=1"), "{listed}");
    assert!(lines[0].contains("attempts=1") && lines[0].contains("too large"), "{listed}");
    let id = |line: &str| {
        line.split_whitespace().next().and_then(|f| f.strip_prefix("id=")).expect("an id").to_string()
    };
    let (kept_id, dropped_id) = (id(lines[0]), id(lines[1]));

    // The cause fixed (a producer taking larger records), the row goes back.
    relay.signal(nix::sys::signal::Signal::SIGTERM);
    relay.wait_exit(Duration::from_secs(30)).await;
    let _relay = world.start_relay(&world.env()).await;
    let (code, out) = quarantine_command(&strict, &["requeue", &kept_id]).await;
    assert_eq!((code, out.trim()), (0, format!("re-queued {kept_id}").as_str()));
    let (code, out) = quarantine_command(&strict, &["discard", &dropped_id, "424242"]).await;
    assert_eq!(code, 1, "an id not in the quarantine is reported: {out}");
    assert!(out.contains(&format!("discarded {dropped_id}")) && out.contains("424242"), "{out}");

    // kept: 1 then 2; dropped: only 2 (counted as 2 by its highest version).
    let mut seen = Sequences::default();
    read_until(&reader, &mut seen, 4, Duration::from_secs(60)).await;
    assert_eq!(seen.highest(kept.to_string().as_bytes()), 2);
    assert_eq!(seen.highest(dropped.to_string().as_bytes()), 2);
    assert_eq!(seen.out_of_order.len(), 1, "only the discarded version is missing: {:?}", seen.out_of_order);
    assert!(seen.out_of_order[0].starts_with(&dropped.to_string()), "{:?}", seen.out_of_order);
    let (code, out) = quarantine_command(&strict, &["list"]).await;
    assert_eq!((code, out.trim()), (0, "no quarantined rows"));
    world.wait_drained(Duration::from_secs(60)).await;
}
