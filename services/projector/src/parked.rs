//! The parked events: events that arrived after a version gap, waiting in the read
//! model's `parked_events` table for the missing version.
//!
//! An event whose order's view is not at the version just before it (an event is
//! missing: a quarantined outbox row, a re-publication out of order) is *parked* in the
//! read model's `parked_events` table, by order and version, with the record's value and
//! origin. It is written in the batch's transaction, so that it commits or rolls back
//! together with the position that moves past it: exactly once, like the views. The batch
//! that brings the missing version loads the order's parked events and applies every one
//! it unblocks, in version order, and deletes their rows, in the same transaction. A
//! restart loses nothing (the rows are in the database); a rebuild replays the topic into
//! its own `parked_events` and swaps it in with the views, so the rows always match the
//! views they wait on.
//!
//! While a gap is open it is visible: the view's `missing_version` (the version it waits
//! for) and `parked_versions` in the query API (an order whose first event is missing
//! answers `404` with problem type `/problems/missing-events`); the gauges
//! `projector_parked_events`, `projector_orders_with_gaps` and
//! `projector_oldest_parked_event_age_seconds` (refreshed from the table every few
//! seconds, see [`crate::gaps`]); and the counters `projector_version_gaps_total` (events
//! parked) and `projector_parked_events_applied_total` (events applied when their gap
//! closed). Parking logs at WARN; a gap that stays open is for an alert on the gauges.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use orders_domain::OrderEvent;
use orders_events::decode_event;
use orders_projection::Batch;
use uuid::Uuid;

use crate::{model::Plan, project::StoreError};

/// The parked events of `ids`, decoded, in version order.
pub(crate) async fn load(
    tx: &Transaction<'_>,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<OrderEvent>>, StoreError> {
    let stmt = tx.prepare_cached(include_str!("sql/load_parked.sql")).await?;
    let rows = tx.query(&stmt, &[&ids]).await?;
    let mut parked: HashMap<Uuid, Vec<OrderEvent>> = HashMap::new();
    for row in rows {
        let order_id: Uuid = row.get("order_id");
        let version: i64 = row.get("version");
        let payload: &[u8] = row.get("payload");
        let (_, event) = decode_event(payload).map_err(|source| StoreError::CorruptParked {
            order_id,
            version,
            source,
        })?;
        parked.entry(order_id).or_default().push(event);
    }
    Ok(parked)
}

/// Stores the events of the batch that wait for a missing version.
pub(crate) async fn park(tx: &Transaction<'_>, plan: &Plan, batch: &Batch<'_>) -> Result<(), StoreError> {
    if plan.park.is_empty() {
        return Ok(());
    }
    let mut c = ParkColumns::default();
    for park in &plan.park {
        let record = &batch.records[park.index];
        c.order_id.push(park.order_id);
        c.version.push(i64::try_from(park.version).unwrap_or(i64::MAX));
        c.partition.push(record.partition);
        c.offset.push(record.offset);
        c.record_timestamp.push(record.timestamp_ms.and_then(DateTime::<Utc>::from_timestamp_millis));
        c.payload.push(record.payload.as_deref().unwrap_or_default());
        c.event_type.push(park.event_type);
    }
    let stmt = tx.prepare_cached(include_str!("sql/park_events.sql")).await?;
    tx.execute(
        &stmt,
        &[&c.order_id, &c.version, &c.event_type, &c.partition, &c.offset, &c.record_timestamp, &c.payload],
    )
    .await?;
    Ok(())
}

/// Deletes the parked events the batch applied.
pub(crate) async fn unpark(tx: &Transaction<'_>, plan: &Plan) -> Result<(), StoreError> {
    if plan.unpark.is_empty() {
        return Ok(());
    }
    let order_id: Vec<Uuid> = plan.unpark.iter().map(|(id, _)| *id).collect();
    let version: Vec<i64> = plan.unpark.iter().map(|(_, v)| i64::try_from(*v).unwrap_or(i64::MAX)).collect();
    let stmt = tx.prepare_cached(include_str!("sql/unpark_events.sql")).await?;
    tx.execute(&stmt, &[&order_id, &version]).await?;
    Ok(())
}

/// Parked event rows as one array per column.
#[derive(Default)]
struct ParkColumns<'a> {
    order_id: Vec<Uuid>,
    version: Vec<i64>,
    event_type: Vec<&'static str>,
    partition: Vec<i32>,
    offset: Vec<i64>,
    record_timestamp: Vec<Option<DateTime<Utc>>>,
    payload: Vec<&'a [u8]>,
}
