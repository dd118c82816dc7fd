//! The comparisons of a reconciliation, as pure functions of what was read: each takes
//! the source (the event store's histories) and one derived copy, and returns the
//! differences, each one sentence.

use std::collections::{BTreeMap, BTreeSet};

use orders_domain::{Order, OrderEvent, OrderEventPayload, OrderStatus};
use uuid::Uuid;

/// One difference: where, and what.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Difference {
    /// The derived copy it is in: `read model`, `user stats`, `saga`, `windows`, `orders topic`, `outbox`.
    pub area: &'static str,
    /// What differs.
    pub what: String,
}

fn diff(area: &'static str, what: String) -> Difference {
    Difference { area, what }
}

/// An event of the event store.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its envelope's event id.
    pub event_id: Uuid,
    /// The event.
    pub event: OrderEvent,
}

/// The event store: each order's history, in version order.
pub type Histories = BTreeMap<Uuid, Vec<Stored>>;

/// The orders as their histories make them (those that replay), and the differences of
/// those that do not.
pub fn replay(histories: &Histories) -> (BTreeMap<Uuid, Order>, Vec<Difference>) {
    let mut orders = BTreeMap::new();
    let mut differences = Vec::new();
    for (id, history) in histories {
        match Order::from_events(history.iter().map(|s| &s.event)) {
            Ok(order) => {
                orders.insert(*id, order);
            }
            Err(e) => {
                differences.push(diff("event store", format!("order {id}: its history does not replay: {e}")))
            }
        }
    }
    (orders, differences)
}

/// A row of `read_model.order_views`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The order.
    pub order_id: Uuid,
    /// Its user.
    pub user_id: String,
    /// Its status.
    pub status: String,
    /// Its currency.
    pub currency: String,
    /// Its total.
    pub total_minor: i64,
    /// The version of the last event applied.
    pub version: i64,
    /// The version it waits for after a gap.
    pub missing_version: Option<i64>,
    /// Its shipment.
    pub shipment_id: Option<String>,
}

fn status(order: &Order) -> &'static str {
    order.status().map_or("none", OrderStatus::as_str)
}

/// Each order's view against its replayed history.
pub fn read_model(orders: &BTreeMap<Uuid, Order>, views: &[View]) -> Vec<Difference> {
    let mut out = Vec::new();
    let by_id: BTreeMap<Uuid, &View> = views.iter().map(|v| (v.order_id, v)).collect();
    for (id, order) in orders {
        let Some(view) = by_id.get(id) else {
            out.push(diff(
                "read model",
                format!("order {id} (v{}) is not in the read model", order.version()),
            ));
            continue;
        };
        let mut field = |name: &str, expected: String, found: String| {
            if expected != found {
                out.push(diff(
                    "read model",
                    format!("order {id}: {name} is {found}, its events say {expected}"),
                ));
            }
        };
        field("version", order.version().to_string(), view.version.to_string());
        field("status", status(order).to_string(), view.status.clone());
        field(
            "user",
            order.user_id().map(|u| u.as_str().to_string()).unwrap_or_default(),
            view.user_id.clone(),
        );
        field(
            "currency",
            order.currency().map(|c| c.as_str().to_string()).unwrap_or_default(),
            view.currency.clone(),
        );
        field("total", order.total().map_or(0, |t| t.amount_minor).to_string(), view.total_minor.to_string());
        field(
            "shipment",
            format!("{:?}", order.shipment().map(|s| s.shipment_id.as_str().to_string())),
            format!("{:?}", view.shipment_id),
        );
        if let Some(missing) = view.missing_version {
            out.push(diff("read model", format!("order {id}: the view waits for version {missing} (a gap)")));
        }
    }
    for view in views.iter().filter(|v| !orders.contains_key(&v.order_id)) {
        out.push(diff(
            "read model",
            format!("order {} is in the read model, not in the event store", view.order_id),
        ));
    }
    out
}

/// A user's statistics in one currency (summed over the partition shards).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserStats {
    /// Orders.
    pub order_count: i64,
    /// Of which pending.
    pub pending: i64,
    /// Paid.
    pub paid: i64,
    /// Shipped.
    pub shipped: i64,
    /// Cancelled.
    pub cancelled: i64,
    /// The payments of orders paid or shipped.
    pub spent_minor: i64,
}

/// The users' statistics (keyed by user and currency) against the replayed orders.
pub fn user_stats(
    orders: &BTreeMap<Uuid, Order>,
    found: &BTreeMap<(String, String), UserStats>,
) -> Vec<Difference> {
    let mut expected: BTreeMap<(String, String), UserStats> = BTreeMap::new();
    for order in orders.values() {
        let (Some(user), Some(currency), Some(status)) = (order.user_id(), order.currency(), order.status())
        else {
            continue;
        };
        let s = expected.entry((user.as_str().to_string(), currency.as_str().to_string())).or_default();
        s.order_count += 1;
        match status {
            OrderStatus::Pending => s.pending += 1,
            OrderStatus::Paid => s.paid += 1,
            OrderStatus::Shipped => s.shipped += 1,
            OrderStatus::Cancelled => s.cancelled += 1,
        }
        if matches!(status, OrderStatus::Paid | OrderStatus::Shipped) {
            s.spent_minor += order.payment().map_or(0, |p| p.amount_minor);
        }
    }
    let keys: BTreeSet<&(String, String)> = expected.keys().chain(found.keys()).collect();
    let zero = UserStats::default();
    keys.into_iter()
        .filter_map(|key| {
            let (e, f) = (expected.get(key).unwrap_or(&zero), found.get(key).unwrap_or(&zero));
            (e != f).then(|| {
                diff("user stats", format!("user {} in {}: {f:?}, the orders say {e:?}", key.0, key.1))
            })
        })
        .collect()
}

/// A window of one user and currency, as the stats aggregator counts it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowCounts {
    /// Orders created in it.
    pub order_count: i64,
    /// Orders paid in it.
    pub paid_count: i64,
    /// Orders cancelled in it.
    pub cancelled_count: i64,
    /// Payments in it.
    pub revenue_minor: i64,
    /// Refunds in it: the payments of orders cancelled after being paid.
    pub refunded_minor: i64,
}

/// A window's key: user, currency, start and end (ms since the epoch).
pub type WindowKey = (String, String, i64, i64);

/// The windows recomputed from the events: tumbling windows of `size_ms`, aligned to the
/// epoch, by each event's `occurred_at`.
pub fn expected_windows(histories: &Histories, size_ms: i64) -> BTreeMap<WindowKey, WindowCounts> {
    let mut windows: BTreeMap<WindowKey, WindowCounts> = BTreeMap::new();
    for history in histories.values() {
        let Some(OrderEventPayload::Created { user_id, currency, .. }) =
            history.first().map(|s| &s.event.payload)
        else {
            continue;
        };
        let mut paid = 0;
        for stored in history {
            let at = stored.event.occurred_at.timestamp_millis();
            let start = at.div_euclid(size_ms) * size_ms;
            let key = (user_id.as_str().to_string(), currency.as_str().to_string(), start, start + size_ms);
            match &stored.event.payload {
                OrderEventPayload::Created { .. } => windows.entry(key).or_default().order_count += 1,
                OrderEventPayload::Paid { amount_minor, .. } => {
                    paid = *amount_minor;
                    let w = windows.entry(key).or_default();
                    w.paid_count += 1;
                    w.revenue_minor += amount_minor;
                }
                OrderEventPayload::Cancelled { .. } => {
                    let w = windows.entry(key).or_default();
                    w.cancelled_count += 1;
                    w.refunded_minor += paid;
                }
                OrderEventPayload::Shipped { .. } => {}
            }
        }
    }
    windows
}

/// The windows of the read model against those recomputed.
pub fn windows(
    expected: &BTreeMap<WindowKey, WindowCounts>,
    found: &BTreeMap<WindowKey, WindowCounts>,
) -> Vec<Difference> {
    let keys: BTreeSet<&WindowKey> = expected.keys().chain(found.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let (e, f) = (expected.get(key), found.get(key));
            (e != f).then(|| {
                let start = chrono::DateTime::from_timestamp_millis(key.2)
                    .map_or(key.2.to_string(), |t| t.to_rfc3339());
                diff(
                    "windows",
                    format!("user {} in {}, window from {start}: {f:?}, the events say {e:?}", key.0, key.1),
                )
            })
        })
        .collect()
}

/// The saga's state, as the order processor's tables hold it.
#[derive(Debug, Clone, Default)]
pub struct Saga {
    /// Per tracked SKU: (reserved, shipped).
    pub stock: BTreeMap<String, (i64, i64)>,
    /// Per order and SKU: (quantity, state).
    pub reservations: BTreeMap<(Uuid, String), (i64, String)>,
    /// Per order: its shipment id.
    pub shipments: BTreeMap<Uuid, String>,
    /// The orders the saga recorded an outcome for: those it found a tracked line in.
    pub outcomes: BTreeSet<Uuid>,
}

/// The saga's reservations, shipments and stock against what the orders imply.
///
/// An order the saga took on (it recorded an outcome: the order had a line of a SKU
/// tracked when it was created; whether a SKU is tracked now says nothing of then) holds
/// a reservation of each tracked line (the sum of its quantities), `reserved` while it is pending or paid, `shipped` once shipped,
/// `released` once cancelled; unless the saga found too little stock, when it holds none
/// and the order is cancelled (by the saga, or by its customer first). A shipped order with a reservation has the saga's shipment, by the id of
/// its `OrderShipped`; a shipment of an order cancelled meanwhile (the customer was
/// first) is the saga's too. The stock's `reserved` and `shipped` are the sums of the
/// reservations in those states.
pub fn saga(orders: &BTreeMap<Uuid, Order>, found: &Saga) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut held: BTreeMap<Uuid, BTreeMap<&str, (i64, &str)>> = BTreeMap::new();
    for ((order, sku), (quantity, state)) in &found.reservations {
        held.entry(*order).or_default().insert(sku, (*quantity, state));
    }
    for (id, order) in orders {
        let Some(status) = order.status() else { continue };
        let mut lines: BTreeMap<&str, i64> = BTreeMap::new();
        for item in order.items().iter().filter(|i| found.stock.contains_key(i.sku.as_str())) {
            *lines.entry(item.sku.as_str()).or_default() += i64::from(item.quantity);
        }
        let state = match status {
            OrderStatus::Pending | OrderStatus::Paid => "reserved",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Cancelled => "released",
        };
        let holds = held.remove(id).unwrap_or_default();
        // No reservation at all is what the saga leaves when it found too little stock;
        // the order is then cancelled, by the saga's `CancelOrder` or by the customer's,
        // whichever came first.
        // An order the saga never took on (no outcome: no line of a SKU tracked then)
        // holds nothing either.
        let left_alone = holds.is_empty() && !found.outcomes.contains(id);
        let expected: BTreeMap<&str, (i64, &str)> =
            if left_alone || (status == OrderStatus::Cancelled && holds.is_empty()) {
                BTreeMap::new()
            } else {
                lines.iter().map(|(sku, q)| (*sku, (*q, state))).collect()
            };
        if holds != expected {
            out.push(diff(
                "saga",
                format!("order {id} ({status}): reservations {holds:?}, its events imply {expected:?}"),
            ));
        }
        let shipped = order.shipment().map(|s| s.shipment_id.as_str());
        match (found.shipments.get(id).map(String::as_str), shipped) {
            (Some(found), Some(shipped)) if found != shipped => out.push(diff(
                "saga",
                format!("order {id}: the saga's shipment is {found}, the order was shipped as {shipped}"),
            )),
            (None, Some(shipped)) if !holds.is_empty() => out.push(diff(
                "saga",
                format!("order {id}: shipped as {shipped} with a reservation, but the saga has no shipment of it"),
            )),
            (Some(found), None) if status != OrderStatus::Cancelled => out.push(diff(
                "saga",
                format!("order {id} ({status}): the saga's shipment {found} was requested, the order is not shipped"),
            )),
            (None, None) if status == OrderStatus::Paid && !holds.is_empty() => {
                out.push(diff("saga", format!("order {id}: paid and reserved, but the saga requested no shipment")));
            }
            _ => {}
        }
    }
    for id in found.shipments.keys().filter(|id| !orders.contains_key(id)) {
        out.push(diff("saga", format!("the saga shipped order {id}, which the event store does not have")));
    }
    for (order, sku) in found.reservations.keys().filter(|(id, _)| !orders.contains_key(id)) {
        out.push(diff(
            "saga",
            format!("the saga holds {sku} for order {order}, which the event store does not have"),
        ));
    }
    for (sku, (reserved, shipped)) in &found.stock {
        let sum = |wanted: &str| -> i64 {
            found
                .reservations
                .iter()
                .filter(|((_, s), (_, state))| s == sku && state == wanted)
                .map(|(_, (q, _))| q)
                .sum()
        };
        let (r, s) = (sum("reserved"), sum("shipped"));
        if (*reserved, *shipped) != (r, s) {
            out.push(diff(
                "saga",
                format!("stock of {sku}: reserved {reserved}, shipped {shipped}; its reservations sum to {r} and {s}"),
            ));
        }
    }
    out
}

/// A record of the `orders` topic: its place, and the event in it (none when it is not an
/// event envelope: poison, which the consumers dead-letter).
#[derive(Debug, Clone)]
pub struct TopicRecord {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// (order, version, event id).
    pub event: Option<(Uuid, u64, Uuid)>,
}

/// What the topic held besides the events: records published again, and poison.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicExtras {
    /// Events at or below a version already on the topic (an at-least-once republish).
    pub republished: usize,
    /// Records that are not event envelopes.
    pub not_events: usize,
}

/// The `orders` topic (records in offset order per partition) against the event store:
/// every stored event on it, each order on one partition in version order (a record
/// published again repeats a version at or below one already there, which consumers
/// skip), and nothing on it that the store lacks.
pub fn topic(histories: &Histories, records: &[TopicRecord]) -> (Vec<Difference>, TopicExtras) {
    let mut out = Vec::new();
    let mut extras = TopicExtras::default();
    // Per order: its partition, the highest version so far, and the event ids seen by version.
    let mut seen: BTreeMap<Uuid, (i32, u64, BTreeMap<u64, Uuid>)> = BTreeMap::new();
    for record in records {
        let Some((order, version, event_id)) = record.event else {
            extras.not_events += 1;
            continue;
        };
        let entry = seen.entry(order).or_insert((record.partition, 0, BTreeMap::new()));
        if entry.0 != record.partition {
            out.push(diff(
                "orders topic",
                format!(
                    "order {order}: v{version} on partition {}, earlier events on {}",
                    record.partition, entry.0
                ),
            ));
        }
        if version <= entry.1 {
            extras.republished += 1;
        } else if version != entry.1 + 1 {
            out.push(diff(
                "orders topic",
                format!(
                    "order {order}: v{version} at {}/{} follows v{} (out of version order)",
                    record.partition, record.offset, entry.1
                ),
            ));
        }
        entry.1 = entry.1.max(version);
        if let Some(earlier) = entry.2.insert(version, event_id)
            && earlier != event_id
        {
            out.push(diff(
                "orders topic",
                format!("order {order}: two different events are v{version} on the topic"),
            ));
        }
    }
    for (order, history) in histories {
        let on_topic = seen.get(order).map(|(_, _, ids)| ids);
        for stored in history {
            let version = stored.event.version;
            match on_topic.and_then(|ids| ids.get(&version)) {
                None => {
                    out.push(diff("orders topic", format!("order {order}: v{version} is not on the topic")))
                }
                Some(id) if *id != stored.event_id => out.push(diff(
                    "orders topic",
                    format!(
                        "order {order}: v{version} on the topic is event {id}, the store's is {}",
                        stored.event_id
                    ),
                )),
                Some(_) => {}
            }
        }
    }
    for (order, (_, _, ids)) in &seen {
        let stored = histories.get(order).map_or(0, Vec::len) as u64;
        for version in ids.keys().filter(|v| **v > stored) {
            out.push(diff(
                "orders topic",
                format!("order {order}: v{version} is on the topic, not in the event store"),
            ));
        }
    }
    (out, extras)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::{DateTime, TimeZone as _, Utc};
    use orders_domain::{
        CancelReason, Currency, LineItem, OrderId, PaymentId, ShipmentId, Sku, TrackingNumber, UserId,
    };

    use super::*;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 10, minute, 0).unwrap()
    }

    fn event(order: Uuid, version: u64, minute: u32, payload: OrderEventPayload) -> Stored {
        let event = OrderEvent { order_id: OrderId::from(order), version, occurred_at: at(minute), payload };
        Stored { event_id: Uuid::new_v4(), event }
    }

    fn created(order: Uuid, minute: u32) -> Stored {
        let items = vec![LineItem::new(Sku::new("book").unwrap(), 2, 500)];
        let payload = OrderEventPayload::Created {
            user_id: UserId::new("ann").unwrap(),
            currency: Currency::new("EUR").unwrap(),
            items,
            total_minor: 1000,
        };
        event(order, 1, minute, payload)
    }

    fn paid(order: Uuid, version: u64, minute: u32) -> Stored {
        let payload = OrderEventPayload::Paid {
            payment_id: PaymentId::new("p").unwrap(),
            amount_minor: 1000,
            currency: Currency::new("EUR").unwrap(),
        };
        event(order, version, minute, payload)
    }

    fn shipped(order: Uuid, version: u64) -> Stored {
        let payload = OrderEventPayload::Shipped {
            shipment_id: ShipmentId::new(format!("s-{order}")).unwrap(),
            tracking_number: TrackingNumber::new("t").unwrap(),
        };
        event(order, version, 30, payload)
    }

    fn cancelled(order: Uuid, version: u64, minute: u32) -> Stored {
        let payload = OrderEventPayload::Cancelled { reason: CancelReason::new("changed my mind").unwrap() };
        event(order, version, minute, payload)
    }

    /// Three orders: `a` pending, `b` paid then cancelled (a refund), `c` shipped.
    fn store() -> (Histories, [Uuid; 3]) {
        let ids = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
        let [a, b, c] = ids;
        let histories = Histories::from([
            (a, vec![created(a, 1)]),
            (b, vec![created(b, 2), paid(b, 2, 3), cancelled(b, 3, 59)]),
            (c, vec![created(c, 4), paid(c, 2, 5), shipped(c, 3)]),
        ]);
        (histories, ids)
    }

    fn view_of(id: Uuid, order: &Order) -> View {
        View {
            order_id: id,
            user_id: "ann".into(),
            status: status(order).into(),
            currency: "EUR".into(),
            total_minor: 1000,
            version: order.version() as i64,
            missing_version: None,
            shipment_id: order.shipment().map(|s| s.shipment_id.as_str().to_string()),
        }
    }

    #[test]
    fn the_read_model_of_the_events_has_no_difference_and_each_change_is_one() {
        let (histories, [a, b, c]) = store();
        let (orders, broken) = replay(&histories);
        assert!(broken.is_empty());
        let views: Vec<View> = orders.iter().map(|(id, o)| view_of(*id, o)).collect();
        assert_eq!(read_model(&orders, &views), vec![]);

        let mut changed = views.clone();
        changed.iter_mut().find(|v| v.order_id == a).unwrap().status = "paid".into();
        changed.retain(|v| v.order_id != b);
        changed.push(View { order_id: Uuid::new_v4(), ..views[0].clone() });
        let found = read_model(&orders, &changed);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found.iter().any(|d| d.what.contains(&format!("order {b} (v3) is not in the read model"))));
        assert!(found.iter().any(|d| d.what == format!("order {a}: status is paid, its events say pending")));
        assert!(found.iter().any(|d| d.what.contains("not in the event store")));
        assert!(read_model(&orders, &views).is_empty(), "{c}: the views unchanged");
    }

    #[test]
    fn user_stats_count_statuses_and_what_paid_orders_spent() {
        let (histories, _) = store();
        let (orders, _) = replay(&histories);
        let right =
            UserStats { order_count: 3, pending: 1, paid: 0, shipped: 1, cancelled: 1, spent_minor: 1000 };
        let key = ("ann".to_string(), "EUR".to_string());
        assert!(user_stats(&orders, &BTreeMap::from([(key.clone(), right.clone())])).is_empty());
        let wrong = UserStats { spent_minor: 2000, ..right };
        assert_eq!(user_stats(&orders, &BTreeMap::from([(key, wrong)])).len(), 1);
    }

    #[test]
    fn windows_count_each_event_in_its_own_window_and_refund_what_was_paid() {
        let (histories, _) = store();
        let expected = expected_windows(&histories, 30 * 60_000);
        let start = |minute| at(minute).timestamp_millis();
        let first = ("ann".to_string(), "EUR".to_string(), start(0), start(30));
        let second = ("ann".to_string(), "EUR".to_string(), start(30), start(0) + 3_600_000);
        let counts = |o, p, c, r, f| WindowCounts {
            order_count: o,
            paid_count: p,
            cancelled_count: c,
            revenue_minor: r,
            refunded_minor: f,
        };
        assert_eq!(
            expected,
            BTreeMap::from([(first.clone(), counts(3, 2, 0, 2000, 0)), (second, counts(0, 0, 1, 0, 1000))])
        );
        let mut found = expected.clone();
        found.get_mut(&first).unwrap().order_count = 4;
        assert_eq!(windows(&expected, &found).len(), 1);
        assert!(windows(&expected, &expected).is_empty());
    }

    #[test]
    fn the_saga_holds_what_the_orders_imply_and_its_stock_sums_its_reservations() {
        let (histories, [a, b, c]) = store();
        let (orders, _) = replay(&histories);
        let reservation = |state: &str| (2, state.to_string());
        let mut found = Saga {
            stock: BTreeMap::from([("book".to_string(), (2, 2))]),
            reservations: BTreeMap::from([
                ((a, "book".to_string()), reservation("reserved")),
                ((b, "book".to_string()), reservation("released")),
                ((c, "book".to_string()), reservation("shipped")),
            ]),
            shipments: BTreeMap::from([(c, format!("s-{c}"))]),
            outcomes: BTreeSet::from([a, b, c]),
        };
        assert_eq!(saga(&orders, &found), vec![]);

        found.reservations.insert((a, "book".to_string()), reservation("shipped"));
        found.shipments.insert(c, "another".into());
        let differences = saga(&orders, &found);
        assert_eq!(differences.len(), 3, "{differences:?}");
        assert!(differences.iter().any(|d| d.what.contains("stock of book: reserved 2, shipped 2")));
        assert!(differences.iter().any(|d| d.what.contains("the saga's shipment is another")));

        // A cancelled order may hold nothing (the saga found no stock); a pending one the
        // saga took on may not; one it never took on (no tracked line then) holds nothing.
        found.reservations.clear();
        found.stock.clear();
        found.shipments.clear();
        assert!(saga(&orders, &found).is_empty(), "untracked SKUs: nothing expected");
        found.stock.insert("book".into(), (0, 0));
        let differences = saga(&orders, &found);
        assert!(
            differences.iter().any(|d| d.what.contains(&format!("order {a} (pending)"))),
            "{differences:?}"
        );
        assert!(!differences.iter().any(|d| d.what.contains(&format!("order {b} "))), "{differences:?}");
        found.outcomes.remove(&a);
        let differences = saga(&orders, &found);
        assert!(!differences.iter().any(|d| d.what.contains(&format!("order {a} "))), "{differences:?}");
    }

    #[test]
    fn the_topic_has_every_event_in_version_order_and_republished_ones_are_counted() {
        let (histories, [a, b, _]) = store();
        let mut records = Vec::new();
        for history in histories.values() {
            for s in history {
                let event = Some((Uuid::from(s.event.order_id), s.event.version, s.event_id));
                records.push(TopicRecord { partition: 0, offset: records.len() as i64, event });
            }
        }
        let (differences, extras) = topic(&histories, &records);
        assert!(differences.is_empty(), "{differences:?}");
        assert_eq!(extras, TopicExtras::default());

        let mut again = records.clone();
        again.push(records[1].clone());
        again.push(TopicRecord { partition: 0, offset: 99, event: None });
        let (differences, extras) = topic(&histories, &again);
        assert!(differences.is_empty(), "{differences:?}");
        assert_eq!(extras, TopicExtras { republished: 1, not_events: 1 });

        // b's v2 lost: v3 follows v1, and v2 is missing.
        let lost: Vec<TopicRecord> = records
            .iter()
            .filter(|r| r.event.is_some_and(|(o, v, _)| !(o == b && v == 2)))
            .cloned()
            .collect();
        let (differences, _) = topic(&histories, &lost);
        assert_eq!(differences.len(), 2, "{differences:?}");
        assert!(differences.iter().any(|d| d.what.contains("v3") && d.what.contains("follows v1")));
        assert!(differences.iter().any(|d| d.what.contains("v2 is not on the topic")));

        // a on two partitions.
        let mut split = records.clone();
        split.push(TopicRecord {
            partition: 1,
            offset: 0,
            event: records.iter().find(|r| r.event.is_some_and(|e| e.0 == a)).unwrap().event,
        });
        let (differences, _) = topic(&histories, &split);
        assert!(differences.iter().any(|d| d.what.contains("on partition 1")), "{differences:?}");
    }
}
