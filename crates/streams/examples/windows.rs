//! Per-user revenue in tumbling windows of 10 s with 5 s grace, over a small stream
//! whose events arrive out of order, one of them too late:
//!
//! ```text
//! cargo run -p orders-streams --example windows
//! ```

use std::time::Duration;

use orders_streams::{WindowStore, Windows};

fn main() -> Result<(), orders_streams::WindowError> {
    let windows = Windows::tumbling(Duration::from_secs(10))?.with_grace(Duration::from_secs(5));
    let mut revenue: WindowStore<String, i64> = WindowStore::new(windows, Duration::from_secs(2));
    // (arrival in processing time, event time, user, amount), both in seconds.
    let stream = [
        (0, 1, "alice", 500),
        (1, 4, "bob", 250),
        (2, 3, "alice", 100),
        (3, 12, "alice", 700),
        (4, 9, "bob", 50),    // out of order, within grace: counted in [0, 10)
        (5, 16, "bob", 300),  // stream time 16 closes [0, 10)
        (6, 8, "alice", 999), // too late: [0, 10) is closed
    ];
    for (arrival, ts, user, amount) in stream {
        let added = revenue.add(&user.to_string(), ts * 1000, |total| *total += amount);
        if added.is_late() {
            println!("t={arrival}s  late: {user} {amount} at {ts}s, for the closed {:?}", added.late);
        }
        for update in revenue.updates_due(arrival * 1000).into_iter().chain(revenue.close()) {
            let kind = if update.is_final { "final " } else { "update" };
            println!("t={arrival}s  {kind} {} {} = {}", update.key, update.window, update.value);
        }
    }
    for change in revenue.take_changes() {
        println!("changelog: {change:?}");
    }
    Ok(())
}
