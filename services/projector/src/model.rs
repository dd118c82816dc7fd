//! The projection's rules, pure (no I/O): how a partition batch of events changes the
//! order views and the per-user statistics.
//!
//! - **Version-checked.** An order's view is at version `v` (0 when absent). An event
//!   with version `<= v` is a duplicate (Kafka redelivered it, or the producer published
//!   it twice) and is skipped; `v + 1` applies; anything higher arrived after a *gap*:
//!   an event is missing before it.
//! - **Out-of-order events wait.** An event after a gap is *parked* (the caller stores
//!   it in the read model's database, in the batch's transaction), and applies, with
//!   every parked event it unblocks, in the batch that brings the missing version
//!   (wherever that is: the same batch or a later one). Until then the view stays at
//!   `v`, consistent but visibly stalled: `missing_version` is `v + 1`. An order whose
//!   first event is missing has no view at all; its parked events show the gap.
//! - **Statistics from views.** A user's statistics (per currency) are the sum of each
//!   order's contribution (one order, one count under its current status, and its
//!   payment while it is paid or shipped). A batch changes them by `contribution(after) -
//!   contribution(before)` per order, so they are exactly as idempotent as the views.
//! - **Deterministic.** Views hold only what the events say (no wall-clock time), so
//!   that a rebuild from the topic produces the same rows as the live projection.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use orders_domain::{OrderEvent, OrderEventPayload, OrderStatus};
use uuid::Uuid;

/// The columns of an order view the rules need, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The order.
    pub order_id: Uuid,
    /// The version of the last event applied.
    pub version: u64,
    /// Who ordered.
    pub user_id: String,
    /// The current status.
    pub status: OrderStatus,
    /// The order's currency.
    pub currency: String,
    /// The order's total, in minor units.
    pub total_minor: i64,
    /// What was paid, once paid.
    pub amount_paid_minor: Option<i64>,
    /// The version a gap made the view wait for.
    pub missing_version: Option<u64>,
}

/// What to write for one order: an insert (when `prev_version` is 0) or an update of
/// the row still at `prev_version`. `None` fields keep their stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewRow {
    /// The order.
    pub order_id: Uuid,
    /// The stored version this row replaces (0: a new row).
    pub prev_version: u64,
    /// The new version.
    pub version: u64,
    /// Who ordered.
    pub user_id: String,
    /// The new status.
    pub status: &'static str,
    /// The currency.
    pub currency: String,
    /// The total.
    pub total_minor: i64,
    /// The line items (set by `OrderCreated`).
    pub items: Option<serde_json::Value>,
    /// Set by `OrderPaid`.
    pub payment_id: Option<String>,
    /// Set by `OrderPaid`.
    pub amount_paid_minor: Option<i64>,
    /// Set by `OrderShipped`.
    pub shipment_id: Option<String>,
    /// Set by `OrderShipped`.
    pub tracking_number: Option<String>,
    /// Set by `OrderCancelled`.
    pub cancel_reason: Option<String>,
    /// Set by `OrderCreated`.
    pub created_at: Option<DateTime<Utc>>,
    /// The time of the last event applied (unchanged when none was).
    pub updated_at: Option<DateTime<Utc>>,
    /// Set by `OrderPaid`.
    pub paid_at: Option<DateTime<Utc>>,
    /// Set by `OrderShipped`.
    pub shipped_at: Option<DateTime<Utc>>,
    /// Set by `OrderCancelled`.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// The version the view waits for after a gap (replaces the stored value).
    pub missing_version: Option<u64>,
}

/// Per-user counts (a delta, or a total).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Orders.
    pub order_count: i64,
    /// Orders pending payment.
    pub pending_count: i64,
    /// Orders paid, not yet shipped.
    pub paid_count: i64,
    /// Orders shipped.
    pub shipped_count: i64,
    /// Orders cancelled.
    pub cancelled_count: i64,
}

impl Counts {
    fn of(status: OrderStatus) -> Self {
        let one = |s: OrderStatus| i64::from(s == status);
        Self {
            order_count: 1,
            pending_count: one(OrderStatus::Pending),
            paid_count: one(OrderStatus::Paid),
            shipped_count: one(OrderStatus::Shipped),
            cancelled_count: one(OrderStatus::Cancelled),
        }
    }

    fn add(&mut self, other: Self, sign: i64) {
        self.order_count += sign * other.order_count;
        self.pending_count += sign * other.pending_count;
        self.paid_count += sign * other.paid_count;
        self.shipped_count += sign * other.shipped_count;
        self.cancelled_count += sign * other.cancelled_count;
    }

    fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// A change of one user's statistics in one currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsDelta {
    /// The user.
    pub user_id: String,
    /// The currency of the orders.
    pub currency: String,
    /// The change of each count.
    pub counts: Counts,
    /// The change of the payments of orders paid and not cancelled, in minor units.
    pub spent_minor: i64,
}

/// An event the rules refuse (one that can never start a view): it is dead-lettered
/// with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The event's index in the batch.
    pub index: usize,
    /// Why.
    pub reason: String,
}

/// An event of the batch to park: it arrived after a gap that the batch does not close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Park {
    /// The event's index in the batch.
    pub index: usize,
    /// Its order.
    pub order_id: Uuid,
    /// Its version.
    pub version: u64,
    /// Its type (`OrderPaid`...).
    pub event_type: &'static str,
    /// The version its order waits for.
    pub missing: u64,
}

/// What a batch does to the read model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// New rows.
    pub inserts: Vec<ViewRow>,
    /// Changed rows.
    pub updates: Vec<ViewRow>,
    /// Statistics changes, sorted by user and currency.
    pub stats: Vec<StatsDelta>,
    /// Events applied.
    pub applied: usize,
    /// Events skipped as duplicates.
    pub duplicates: usize,
    /// Events refused.
    pub refused: Vec<Refusal>,
    /// Events of the batch to park, by order and version.
    pub park: Vec<Park>,
    /// Parked events (stored before the batch) that the batch applied or found to be
    /// duplicates: their rows go.
    pub unpark: Vec<(Uuid, u64)>,
    /// Parked events (stored before the batch) that applied, their gap closed.
    pub unparked_applied: usize,
}

/// Where an event waiting for its turn comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The batch, at this index.
    Batch(usize),
    /// The parked events stored before the batch.
    Stored,
}

/// An order touched by the batch: its stored state, its state now, the row to write, and
/// its events waiting for a missing version (by version).
struct Touched<'a> {
    before: Option<View>,
    after: Option<View>,
    row: Option<ViewRow>,
    waiting: BTreeMap<u64, (Source, &'a OrderEvent)>,
}

/// Applies `events` (index in the batch, event; in offset order) to the `current` views
/// of their orders and their `parked` events (by order, stored before the batch).
pub fn plan(
    current: HashMap<Uuid, View>,
    parked: &HashMap<Uuid, Vec<OrderEvent>>,
    events: &[(usize, OrderEvent)],
) -> Plan {
    let mut plan = Plan::default();
    let mut touched: BTreeMap<Uuid, Touched<'_>> = BTreeMap::new();
    for (index, event) in events {
        let order_id = event.order_id.as_uuid();
        let entry = touched.entry(order_id).or_insert_with(|| {
            let before = current.get(&order_id).cloned();
            let version = before.as_ref().map_or(0, |v| v.version);
            let mut waiting = BTreeMap::new();
            for stored in parked.get(&order_id).into_iter().flatten() {
                if stored.version <= version {
                    // Applied already (it cannot be, but a stale row must not block).
                    plan.unpark.push((order_id, stored.version));
                } else {
                    waiting.insert(stored.version, (Source::Stored, stored));
                }
            }
            Touched { after: before.clone(), before, row: None, waiting }
        });
        let version = entry.after.as_ref().map_or(0, |v| v.version);
        if event.version <= version || entry.waiting.contains_key(&event.version) {
            plan.duplicates += 1;
            continue;
        }
        if event.version > version + 1 {
            entry.waiting.insert(event.version, (Source::Batch(*index), event));
            continue;
        }
        if !apply(&mut plan, entry, Source::Batch(*index), event) {
            continue;
        }
        // The gap before the waiting events may be closed now.
        loop {
            let next = entry.after.as_ref().map_or(0, |v| v.version) + 1;
            let Some((source, waiting)) = entry.waiting.remove(&next) else { break };
            if source == Source::Stored {
                plan.unpark.push((order_id, next));
                plan.unparked_applied += 1;
            }
            if !apply(&mut plan, entry, source, waiting) {
                break;
            }
        }
    }

    for (order_id, entry) in &mut touched {
        let version = entry.after.as_ref().map_or(0, |v| v.version);
        let missing = (!entry.waiting.is_empty()).then_some(version + 1);
        for (v, (source, event)) in &entry.waiting {
            if let Source::Batch(index) = source {
                plan.park.push(Park {
                    index: *index,
                    order_id: *order_id,
                    version: *v,
                    event_type: event.event_type(),
                    missing: version + 1,
                });
            }
        }
        if let Some(after) = &mut entry.after
            && after.missing_version != missing
        {
            after.missing_version = missing;
            row_for(&entry.before, after, &mut entry.row).missing_version = missing;
        }
    }
    plan.park.sort_by_key(|p| p.index);

    let mut stats: BTreeMap<(String, String), (Counts, i64)> = BTreeMap::new();
    for touched in touched.into_values() {
        let Some(row) = touched.row else { continue };
        for (view, sign) in [(&touched.before, -1), (&touched.after, 1)] {
            let Some(view) = view else { continue };
            let slot = stats.entry((view.user_id.clone(), view.currency.clone())).or_default();
            slot.0.add(Counts::of(view.status), sign);
            if matches!(view.status, OrderStatus::Paid | OrderStatus::Shipped) {
                slot.1 += sign * view.amount_paid_minor.unwrap_or(view.total_minor);
            }
        }
        if row.prev_version == 0 { plan.inserts.push(row) } else { plan.updates.push(row) }
    }
    plan.stats = stats
        .into_iter()
        .filter(|(_, (counts, spent))| !counts.is_zero() || *spent != 0)
        .map(|((user_id, currency), (counts, spent_minor))| StatsDelta {
            user_id,
            currency,
            counts,
            spent_minor,
        })
        .collect();
    plan
}

/// Applies `event` (the next version of its order) to `entry`; `false` when it cannot
/// start a view (refused when it came from the batch).
fn apply(plan: &mut Plan, entry: &mut Touched<'_>, source: Source, event: &OrderEvent) -> bool {
    let Some(after) = next_state(entry.after.as_ref(), event) else {
        if let Source::Batch(index) = source {
            plan.refused.push(Refusal {
                index,
                reason: format!(
                    "the first event of order {} is {}, not OrderCreated",
                    event.order_id,
                    event.event_type()
                ),
            });
        }
        return false;
    };
    let row = row_for(&entry.before, &after, &mut entry.row);
    fill_row(row, &after, event);
    entry.after = Some(after);
    plan.applied += 1;
    true
}

/// The view after `event` (whose version is the next one), or `None` when the event
/// cannot start a view (no view yet and not `OrderCreated`).
fn next_state(view: Option<&View>, event: &OrderEvent) -> Option<View> {
    let mut next = match (view, &event.payload) {
        (None, OrderEventPayload::Created { user_id, currency, total_minor, .. }) => View {
            order_id: event.order_id.as_uuid(),
            version: 0,
            user_id: user_id.to_string(),
            status: OrderStatus::Pending,
            currency: currency.to_string(),
            total_minor: *total_minor,
            amount_paid_minor: None,
            missing_version: None,
        },
        (None, _) => return None,
        (Some(view), _) => view.clone(),
    };
    match &event.payload {
        OrderEventPayload::Created { .. } => {}
        OrderEventPayload::Paid { amount_minor, .. } => {
            next.status = OrderStatus::Paid;
            next.amount_paid_minor = Some(*amount_minor);
        }
        OrderEventPayload::Shipped { .. } => next.status = OrderStatus::Shipped,
        OrderEventPayload::Cancelled { .. } => next.status = OrderStatus::Cancelled,
    }
    next.version = event.version;
    Some(next)
}

/// The row being built for an order, started from its stored state.
fn row_for<'a>(before: &Option<View>, now: &View, row: &'a mut Option<ViewRow>) -> &'a mut ViewRow {
    row.get_or_insert_with(|| ViewRow {
        order_id: now.order_id,
        prev_version: before.as_ref().map_or(0, |b| b.version),
        version: now.version,
        user_id: now.user_id.clone(),
        status: now.status.as_str(),
        currency: now.currency.clone(),
        total_minor: now.total_minor,
        items: None,
        payment_id: None,
        amount_paid_minor: None,
        shipment_id: None,
        tracking_number: None,
        cancel_reason: None,
        created_at: None,
        updated_at: None,
        paid_at: None,
        shipped_at: None,
        cancelled_at: None,
        missing_version: now.missing_version,
    })
}

fn fill_row(row: &mut ViewRow, view: &View, event: &OrderEvent) {
    let at = event.occurred_at;
    row.version = view.version;
    row.status = view.status.as_str();
    row.user_id.clone_from(&view.user_id);
    row.currency.clone_from(&view.currency);
    row.total_minor = view.total_minor;
    row.updated_at = Some(at);
    match &event.payload {
        OrderEventPayload::Created { items, .. } => {
            row.items = serde_json::to_value(items).ok();
            row.created_at = Some(at);
        }
        OrderEventPayload::Paid { payment_id, amount_minor, .. } => {
            row.payment_id = Some(payment_id.to_string());
            row.amount_paid_minor = Some(*amount_minor);
            row.paid_at = Some(at);
        }
        OrderEventPayload::Shipped { shipment_id, tracking_number } => {
            row.shipment_id = Some(shipment_id.to_string());
            row.tracking_number = Some(tracking_number.to_string());
            row.shipped_at = Some(at);
        }
        OrderEventPayload::Cancelled { reason } => {
            row.cancel_reason = Some(reason.to_string());
            row.cancelled_at = Some(at);
        }
    }
}

/// Parses a stored status.
pub fn parse_status(text: &str) -> Option<OrderStatus> {
    [OrderStatus::Pending, OrderStatus::Paid, OrderStatus::Shipped, OrderStatus::Cancelled]
        .into_iter()
        .find(|s| s.as_str() == text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;
    use orders_domain::{
        CancelOrder, CancelReason, CreateOrder, Currency, LineItem, Order, OrderId, PayOrder, PaymentId,
        ShipOrder, ShipmentId, Sku, TrackingNumber, UserId,
    };

    use super::*;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 1, 12, minute, 0).unwrap()
    }

    /// created (1), paid (2), shipped (3) of one order of 2 x 500 EUR for `user`.
    fn lifecycle(user: &str) -> Vec<OrderEvent> {
        let id = OrderId::from_uuid(Uuid::now_v7());
        let item = LineItem::new(Sku::new("SKU-1").unwrap(), 2, 500);
        let create =
            CreateOrder::new(UserId::new(user).unwrap(), Currency::new("EUR").unwrap(), vec![item]).unwrap();
        let mut order = Order::default();
        let mut events = order.create(id, create, at(0)).unwrap();
        order.apply(&events[0]).unwrap();
        let paid =
            order.pay(PayOrder::new(PaymentId::new("pay-1").unwrap(), 1000, None).unwrap(), at(1)).unwrap();
        order.apply(&paid[0]).unwrap();
        let shipped = order
            .ship(
                ShipOrder::new(ShipmentId::new("ship-1").unwrap(), TrackingNumber::new("TN1").unwrap()),
                at(2),
            )
            .unwrap();
        events.extend(paid);
        events.extend(shipped);
        events
    }

    fn batch(events: &[&OrderEvent]) -> Vec<(usize, OrderEvent)> {
        events.iter().enumerate().map(|(i, e)| (i, (*e).clone())).collect()
    }

    fn view_of(row: &ViewRow) -> View {
        View {
            order_id: row.order_id,
            version: row.version,
            user_id: row.user_id.clone(),
            status: parse_status(row.status).unwrap(),
            currency: row.currency.clone(),
            total_minor: row.total_minor,
            amount_paid_minor: row.amount_paid_minor,
            missing_version: row.missing_version,
        }
    }

    #[test]
    fn a_whole_lifecycle_in_one_batch_is_one_insert() {
        let events = lifecycle("alice");
        let plan = plan(HashMap::new(), &HashMap::new(), &batch(&events.iter().collect::<Vec<_>>()));
        assert_eq!(plan.applied, 3);
        assert_eq!(plan.inserts.len(), 1);
        let row = &plan.inserts[0];
        assert_eq!((row.version, row.status, row.amount_paid_minor), (3, "shipped", Some(1000)));
        assert_eq!((row.created_at, row.paid_at, row.shipped_at), (Some(at(0)), Some(at(1)), Some(at(2))));
        assert_eq!(
            plan.stats,
            vec![StatsDelta {
                user_id: "alice".into(),
                currency: "EUR".into(),
                counts: Counts { order_count: 1, shipped_count: 1, ..Counts::default() },
                spent_minor: 1000
            }]
        );
    }

    #[test]
    fn duplicates_are_skipped_and_change_nothing() {
        let events = lifecycle("bob");
        let first = plan(HashMap::new(), &HashMap::new(), &batch(&[&events[0], &events[1]]));
        let stored = view_of(&first.inserts[0]);
        let again = plan(
            HashMap::from([(stored.order_id, stored.clone())]),
            &HashMap::new(),
            &batch(&[&events[0], &events[1], &events[1], &events[0]]),
        );
        assert_eq!((again.applied, again.duplicates), (0, 4));
        assert!(again.inserts.is_empty() && again.updates.is_empty());
        assert!(again.stats.is_empty());
    }

    #[test]
    fn an_update_moves_counts_between_statuses() {
        let events = lifecycle("carol");
        let first = plan(HashMap::new(), &HashMap::new(), &batch(&[&events[0]]));
        let stored = view_of(&first.inserts[0]);
        let next = plan(
            HashMap::from([(stored.order_id, stored)]),
            &HashMap::new(),
            &batch(&[&events[1], &events[1]]),
        );
        assert_eq!((next.applied, next.duplicates), (1, 1));
        assert_eq!(next.updates[0].prev_version, 1);
        assert_eq!(next.stats[0].counts, Counts { pending_count: -1, paid_count: 1, ..Counts::default() });
        assert_eq!(next.stats[0].spent_minor, 1000);
    }

    #[test]
    fn an_event_after_a_gap_is_parked_and_marks_the_view() {
        let events = lifecycle("dave");
        let first = plan(HashMap::new(), &HashMap::new(), &batch(&[&events[0]]));
        let stored = view_of(&first.inserts[0]);
        let id = stored.order_id;
        let gapped = plan(HashMap::from([(id, stored)]), &HashMap::new(), &batch(&[&events[2]]));
        assert_eq!(gapped.applied, 0);
        assert!(gapped.refused.is_empty());
        assert_eq!(
            gapped.park,
            [Park { index: 0, order_id: id, version: 3, event_type: "OrderShipped", missing: 2 }]
        );
        let row = &gapped.updates[0];
        assert_eq!((row.version, row.missing_version, row.updated_at), (1, Some(2), None));
        assert!(gapped.stats.is_empty(), "a gap changes no statistics");
    }

    #[test]
    fn the_missing_version_applies_the_parked_events_it_unblocks() {
        let events = lifecycle("gail");
        let id = events[0].order_id.as_uuid();
        let first = plan(HashMap::new(), &HashMap::new(), &batch(&[&events[0]]));
        let stored = view_of(&first.inserts[0]);
        let parked = HashMap::from([(id, vec![events[2].clone()])]);
        let closed = plan(HashMap::from([(id, stored)]), &parked, &batch(&[&events[1]]));
        assert_eq!((closed.applied, closed.unparked_applied), (2, 1));
        assert_eq!(closed.unpark, [(id, 3)]);
        assert!(closed.park.is_empty());
        let row = &closed.updates[0];
        assert_eq!((row.version, row.status, row.missing_version), (3, "shipped", None));
        assert_eq!(
            closed.stats[0].counts,
            Counts { pending_count: -1, shipped_count: 1, ..Counts::default() }
        );
    }

    #[test]
    fn versions_out_of_order_in_one_batch_apply_in_version_order() {
        let events = lifecycle("hank");
        let plan = plan(HashMap::new(), &HashMap::new(), &batch(&[&events[0], &events[2], &events[1]]));
        assert_eq!(plan.applied, 3);
        assert!(plan.park.is_empty() && plan.unpark.is_empty());
        let row = &plan.inserts[0];
        assert_eq!((row.version, row.status, row.missing_version), (3, "shipped", None));
    }

    #[test]
    fn a_second_event_before_the_first_waits_without_a_view() {
        let events = lifecycle("ivy");
        let id = events[0].order_id.as_uuid();
        let early = plan(HashMap::new(), &HashMap::new(), &batch(&[&events[1], &events[1]]));
        assert_eq!(
            early.park,
            [Park { index: 0, order_id: id, version: 2, event_type: "OrderPaid", missing: 1 }]
        );
        assert_eq!(early.duplicates, 1);
        assert!(early.inserts.is_empty() && early.stats.is_empty());

        let parked = HashMap::from([(id, vec![events[1].clone()])]);
        let closed = plan(HashMap::new(), &parked, &batch(&[&events[0]]));
        assert_eq!(closed.unpark, [(id, 2)]);
        let row = &closed.inserts[0];
        assert_eq!((row.version, row.status, row.missing_version), (2, "paid", None));
        assert_eq!(closed.stats[0].spent_minor, 1000);
    }

    #[test]
    fn cancelling_a_paid_order_takes_its_payment_out_of_the_spend() {
        let events = lifecycle("fred");
        let paid = plan(HashMap::new(), &HashMap::new(), &batch(&[&events[0], &events[1]]));
        let stored = view_of(&paid.inserts[0]);
        let order = Order::from_events(&events[..2]).unwrap();
        let cancelled =
            order.cancel(CancelOrder::new(CancelReason::new("changed mind").unwrap()), at(5)).unwrap();
        let plan =
            plan(HashMap::from([(stored.order_id, stored)]), &HashMap::new(), &batch(&[&cancelled[0]]));
        assert_eq!(
            plan.stats,
            vec![StatsDelta {
                user_id: "fred".into(),
                currency: "EUR".into(),
                counts: Counts { paid_count: -1, cancelled_count: 1, ..Counts::default() },
                spent_minor: -1000
            }]
        );
        assert_eq!(plan.updates[0].cancel_reason.as_deref(), Some("changed mind"));
    }
}
