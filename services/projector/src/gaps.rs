//! The gap gauges: how many events wait in `parked_events` for a missing version (see
//! [`crate::project`]), for how many orders, and how old the oldest is.
//!
//! They are read from the table every [`REFRESH`], so that they are right whatever
//! replica parked or applied the events and across restarts: every replica reports the
//! whole read model's numbers (aggregate them with `max`, not `sum`).
//! - `projector_parked_events` (gauge): parked events;
//! - `projector_orders_with_gaps` (gauge): orders with at least one;
//! - `projector_oldest_parked_event_age_seconds` (gauge): since the oldest parked
//!   record's timestamp in the topic (0 when none). Alert when it stays above a few
//!   minutes: the missing event is not coming by itself (replay it from the outbox
//!   quarantine or the dead-letter topic).

use std::time::Duration;

use deadpool_postgres::Pool;
use orders_runtime::CancellationToken;

/// How often the gauges are refreshed.
pub const REFRESH: Duration = Duration::from_secs(2);

/// Refreshes the gauges from `pool` (the live read model) until `token` is cancelled.
pub async fn run(pool: Pool, token: CancellationToken) -> anyhow::Result<()> {
    loop {
        match summary(&pool).await {
            // Looked up each time, not kept: this task may start before the service
            // installs its metrics recorder.
            Ok((events, orders, age)) => {
                metrics::gauge!("projector_parked_events").set(events as f64);
                metrics::gauge!("projector_orders_with_gaps").set(orders as f64);
                metrics::gauge!("projector_oldest_parked_event_age_seconds").set(age);
            }
            // The schema may not be migrated yet, or the database is down: readiness says so.
            Err(e) => tracing::debug!(error = %e, "reading the parked events failed"),
        }
        tokio::select! {
            () = token.cancelled() => return Ok(()),
            () = tokio::time::sleep(REFRESH) => {}
        }
    }
}

async fn summary(pool: &Pool) -> anyhow::Result<(i64, i64, f64)> {
    let client = pool.get().await?;
    let stmt = client.prepare_cached(include_str!("sql/parked_summary.sql")).await?;
    let row = client.query_one(&stmt, &[]).await?;
    Ok((row.get("events"), row.get("orders"), row.get("oldest_seconds")))
}
