//! [`ReadModel`]: the [`Handler`] that applies `orders` events to the read model.
//!
//! For one partition batch, inside the transaction that also stores the position:
//! decode every record (an undecodable or unknown event, or one whose key is not its
//! order id, is dead-lettered), read the current views and the parked events of the
//! orders it touches, run the rules ([`crate::model::plan`]), then write the new and
//! changed views, the statistics deltas and the parked events with one statement each
//! (one binary array parameter per column, expanded by `unnest`). Duplicates are
//! skipped; events after a version gap are parked until it closes ([`crate::parked`]).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use orders_domain::OrderEvent;
use orders_events::decode_event;
use orders_projection::{Batch, DeadLetter, Handler, Outcome, Record};
use uuid::Uuid;

use crate::{
    model::{self, Plan, StatsDelta, View, ViewRow},
    parked,
};

/// Why a batch could not be written (retried by the projection loop).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A statement failed.
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// A stored view is not one this code wrote.
    #[error("order view {0} holds an unknown status `{1}`")]
    Corrupt(Uuid, String),
    /// A view changed under the batch: another writer applied events of the same order.
    #[error("{0} order views changed concurrently; retrying the batch")]
    Concurrent(u64),
    /// A parked event's stored value no longer decodes (it did when it was parked).
    #[error("parked event of order {order_id} version {version} does not decode: {source}")]
    CorruptParked {
        /// Its order.
        order_id: Uuid,
        /// Its version.
        version: i64,
        /// Why.
        #[source]
        source: orders_events::DecodeError,
    },
}

/// The read model's handler. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ReadModel;

impl Handler for ReadModel {
    type Error = StoreError;

    async fn apply(&self, tx: &Transaction<'_>, batch: &Batch<'_>) -> Result<Outcome, StoreError> {
        let mut outcome = Outcome::default();
        let mut events = Vec::with_capacity(batch.records.len());
        for (index, record) in batch.records.iter().enumerate() {
            match decode(record) {
                Ok(event) => events.push((index, event)),
                Err(reason) => outcome.dead_letters.push(DeadLetter { index, reason }),
            }
        }
        if events.is_empty() {
            return Ok(outcome);
        }
        let ids: Vec<Uuid> =
            events.iter().map(|(_, e)| e.order_id.as_uuid()).collect::<BTreeSet<_>>().into_iter().collect();
        let (current, parked) = futures::try_join!(load_views(tx, &ids), parked::load(tx, &ids))?;
        let plan = model::plan(current, &parked, &events);
        let occurred_to = events.iter().map(|(_, e)| e.occurred_at).max();
        futures::try_join!(write(tx, &plan, batch), advance_clock(tx, batch.partition, occurred_to))?;

        if plan.duplicates > 0 {
            metrics::counter!("projector_duplicate_events_total").increment(plan.duplicates as u64);
        }
        for park in &plan.park {
            let record = &batch.records[park.index];
            tracing::warn!(
                order_id = %park.order_id,
                version = park.version,
                missing_version = park.missing,
                partition = record.partition,
                offset = record.offset,
                "version gap: the event is parked until the missing version arrives"
            );
        }
        if !plan.park.is_empty() {
            metrics::counter!("projector_version_gaps_total").increment(plan.park.len() as u64);
        }
        if plan.unparked_applied > 0 {
            tracing::info!(events = plan.unparked_applied, "version gaps closed: parked events applied");
            metrics::counter!("projector_parked_events_applied_total")
                .increment(plan.unparked_applied as u64);
        }
        for refusal in &plan.refused {
            outcome.dead_letters.push(DeadLetter { index: refusal.index, reason: refusal.reason.clone() });
        }
        outcome.dead_letters.sort_by_key(|d| d.index);
        Ok(outcome)
    }
}

/// Decodes one record; `Err` is the dead-letter reason.
fn decode(record: &Record) -> Result<OrderEvent, String> {
    let payload = record.payload.as_deref().ok_or("the record has no value")?;
    let (_, event) = decode_event(payload).map_err(|e| format!("undecodable event: {e}"))?;
    let order_id = event.order_id.to_string();
    expect_key(record, &order_id, || format!("the event's order id {order_id}"))?;
    Ok(event)
}

/// `Ok` when the record's key is `id`; else the dead-letter reason: the key found is not
/// `what()` (built only then).
pub(crate) fn expect_key(record: &Record, id: &str, what: impl FnOnce() -> String) -> Result<(), String> {
    match record.key.as_deref() {
        Some(key) if key == id.as_bytes() => Ok(()),
        key => Err(format!(
            "the record key `{}` is not {}",
            String::from_utf8_lossy(key.unwrap_or_default()),
            what()
        )),
    }
}

async fn load_views(tx: &Transaction<'_>, ids: &[Uuid]) -> Result<HashMap<Uuid, View>, StoreError> {
    let stmt = tx.prepare_cached(include_str!("sql/load_views.sql")).await?;
    let rows = tx.query(&stmt, &[&ids]).await?;
    let mut views = HashMap::with_capacity(rows.len());
    for row in rows {
        let order_id: Uuid = row.get("order_id");
        let status: String = row.get("status");
        let status = model::parse_status(&status).ok_or(StoreError::Corrupt(order_id, status))?;
        let version: i64 = row.get("version");
        let missing: Option<i64> = row.get("missing_version");
        views.insert(
            order_id,
            View {
                order_id,
                version: u64::try_from(version).unwrap_or(0),
                user_id: row.get("user_id"),
                status,
                currency: row.get("currency"),
                total_minor: row.get("total_minor"),
                amount_paid_minor: row.get("amount_paid_minor"),
                missing_version: missing.and_then(|m| u64::try_from(m).ok()),
            },
        );
    }
    Ok(views)
}

/// Writes a plan: its statements are independent, so they are sent together (pipelined
/// on the transaction's connection).
async fn write(tx: &Transaction<'_>, plan: &Plan, batch: &Batch<'_>) -> Result<(), StoreError> {
    futures::try_join!(
        write_rows(tx, plan, batch.partition),
        parked::park(tx, plan, batch),
        parked::unpark(tx, plan),
    )?;
    Ok(())
}

/// Writes a plan's row changes (new views, changed views, statistics) with the
/// projector's set-based statements, as [`ReadModel`] does for a batch, without the
/// parked events and the clock: the benchmark's PostgreSQL baseline writes
/// precomputed plans with it.
///
/// # Errors
/// A statement fails, or a view changed under the plan.
pub async fn write_rows(tx: &Transaction<'_>, plan: &Plan, partition: i32) -> Result<(), StoreError> {
    futures::try_join!(insert_views(tx, plan), update_views(tx, plan), upsert_stats(tx, plan, partition))?;
    Ok(())
}

/// Moves the partition's clock (`partition_clock`) to the batch's latest event time: how
/// a query for an unknown order knows that it is not coming (see [`crate::waiters`]).
async fn advance_clock(
    tx: &Transaction<'_>,
    partition: i32,
    occurred_to: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    let Some(occurred_to) = occurred_to else { return Ok(()) };
    let stmt = tx.prepare_cached(include_str!("sql/advance_clock.sql")).await?;
    tx.execute(&stmt, &[&partition, &occurred_to]).await?;
    Ok(())
}

async fn insert_views(tx: &Transaction<'_>, plan: &Plan) -> Result<(), StoreError> {
    if !plan.inserts.is_empty() {
        let c = Columns::of(&plan.inserts);
        let stmt = tx.prepare_cached(include_str!("sql/insert_views.sql")).await?;
        tx.execute(
            &stmt,
            &[
                &c.order_id,
                &c.user_id,
                &c.status,
                &c.currency,
                &c.total_minor,
                &c.items,
                &c.payment_id,
                &c.amount_paid_minor,
                &c.shipment_id,
                &c.tracking_number,
                &c.cancel_reason,
                &c.created_at,
                &c.updated_at,
                &c.paid_at,
                &c.shipped_at,
                &c.cancelled_at,
                &c.version,
                &c.missing_version,
            ],
        )
        .await?;
    }
    Ok(())
}

async fn update_views(tx: &Transaction<'_>, plan: &Plan) -> Result<(), StoreError> {
    if !plan.updates.is_empty() {
        let c = Columns::of(&plan.updates);
        let stmt = tx.prepare_cached(include_str!("sql/update_views.sql")).await?;
        let changed = tx
            .execute(
                &stmt,
                &[
                    &c.order_id,
                    &c.prev_version,
                    &c.status,
                    &c.version,
                    &c.updated_at,
                    &c.payment_id,
                    &c.amount_paid_minor,
                    &c.paid_at,
                    &c.shipment_id,
                    &c.tracking_number,
                    &c.shipped_at,
                    &c.cancel_reason,
                    &c.cancelled_at,
                    &c.missing_version,
                ],
            )
            .await?;
        let expected = plan.updates.len() as u64;
        if changed != expected {
            return Err(StoreError::Concurrent(expected - changed));
        }
    }
    Ok(())
}

async fn upsert_stats(tx: &Transaction<'_>, plan: &Plan, partition: i32) -> Result<(), StoreError> {
    if !plan.stats.is_empty() {
        let d = &plan.stats;
        let column = |f: fn(&StatsDelta) -> i64| d.iter().map(f).collect::<Vec<i64>>();
        let user_id: Vec<&str> = d.iter().map(|s| s.user_id.as_str()).collect();
        let currency: Vec<&str> = d.iter().map(|s| s.currency.as_str()).collect();
        let stmt = tx.prepare_cached(include_str!("sql/upsert_user_stats.sql")).await?;
        tx.execute(
            &stmt,
            &[
                &partition,
                &user_id,
                &currency,
                &column(|s| s.counts.order_count),
                &column(|s| s.counts.pending_count),
                &column(|s| s.counts.paid_count),
                &column(|s| s.counts.shipped_count),
                &column(|s| s.counts.cancelled_count),
                &column(|s| s.spent_minor),
            ],
        )
        .await?;
    }
    Ok(())
}

/// Order view rows as one array per column: sent as binary parameters and expanded by
/// `unnest`, so PostgreSQL parses nothing but the two JSON columns.
struct Columns<'a> {
    order_id: Vec<Uuid>,
    prev_version: Vec<i64>,
    version: Vec<i64>,
    user_id: Vec<&'a str>,
    status: Vec<&'a str>,
    currency: Vec<&'a str>,
    total_minor: Vec<i64>,
    items: Vec<Option<&'a serde_json::Value>>,
    payment_id: Vec<Option<&'a str>>,
    amount_paid_minor: Vec<Option<i64>>,
    shipment_id: Vec<Option<&'a str>>,
    tracking_number: Vec<Option<&'a str>>,
    cancel_reason: Vec<Option<&'a str>>,
    created_at: Vec<Option<DateTime<Utc>>>,
    updated_at: Vec<Option<DateTime<Utc>>>,
    paid_at: Vec<Option<DateTime<Utc>>>,
    shipped_at: Vec<Option<DateTime<Utc>>>,
    cancelled_at: Vec<Option<DateTime<Utc>>>,
    missing_version: Vec<Option<i64>>,
}

impl<'a> Columns<'a> {
    fn of(rows: &'a [ViewRow]) -> Self {
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Self {
            order_id: rows.iter().map(|r| r.order_id).collect(),
            prev_version: rows.iter().map(|r| int(r.prev_version)).collect(),
            version: rows.iter().map(|r| int(r.version)).collect(),
            user_id: rows.iter().map(|r| r.user_id.as_str()).collect(),
            status: rows.iter().map(|r| r.status).collect(),
            currency: rows.iter().map(|r| r.currency.as_str()).collect(),
            total_minor: rows.iter().map(|r| r.total_minor).collect(),
            items: rows.iter().map(|r| r.items.as_ref()).collect(),
            payment_id: rows.iter().map(|r| r.payment_id.as_deref()).collect(),
            amount_paid_minor: rows.iter().map(|r| r.amount_paid_minor).collect(),
            shipment_id: rows.iter().map(|r| r.shipment_id.as_deref()).collect(),
            tracking_number: rows.iter().map(|r| r.tracking_number.as_deref()).collect(),
            cancel_reason: rows.iter().map(|r| r.cancel_reason.as_deref()).collect(),
            created_at: rows.iter().map(|r| r.created_at).collect(),
            updated_at: rows.iter().map(|r| r.updated_at).collect(),
            paid_at: rows.iter().map(|r| r.paid_at).collect(),
            shipped_at: rows.iter().map(|r| r.shipped_at).collect(),
            cancelled_at: rows.iter().map(|r| r.cancelled_at).collect(),
            missing_version: rows.iter().map(|r| r.missing_version.map(int)).collect(),
        }
    }
}
