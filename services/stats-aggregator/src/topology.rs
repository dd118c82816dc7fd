//! The aggregator's two stages, as pure functions over their state stores (the Kafka
//! transactions around them are elsewhere).
//!
//! 1. **Per order** (input `orders`, keyed by order id): a [`TableStore`] of
//!    [`OrderState`] remembers each order's user, currency, payment and the last
//!    version applied. An event at or below that version is a duplicate (the relay is
//!    at least once; an event can be re-sent by hand) and is skipped. The others become
//!    a [`UserActivity`] keyed by user: created, paid (with the amount), cancelled
//!    (with what had been paid: the refund). Only this stage knows what a cancelled
//!    order had paid.
//! 2. **Per user** (input: the repartition topic, keyed by user): a [`WindowStore`] of
//!    [`WindowStats`] per user and currency, in event-time windows of the activity's
//!    `occurred_at`.

use chrono::{DateTime, Utc};
use orders_domain::{Currency, OrderEvent, OrderEventPayload, UserId};
use orders_events::UserWindowStats;
use orders_streams::{Added, Emitted, TableStore, WindowStore};

/// What stage 1 remembers of an order.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct OrderState {
    /// Its user.
    #[prost(string, tag = "1")]
    pub user_id: String,
    /// Its currency.
    #[prost(string, tag = "2")]
    pub currency: String,
    /// The last version applied.
    #[prost(uint64, tag = "3")]
    pub last_version: u64,
    /// What was paid, once paid.
    #[prost(int64, optional, tag = "4")]
    pub paid_minor: Option<i64>,
}

/// What an order event means for its user's statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum Activity {
    /// Unused: no activity is of kind zero (Protobuf's default).
    Unspecified = 0,
    /// The order was created.
    Created = 1,
    /// The order was paid `amount_minor`.
    Paid = 2,
    /// The order was cancelled; `amount_minor` is what it had paid (the refund).
    Cancelled = 3,
}

/// A record of the repartition topic (keyed by user): one activity of one order.
/// Internal to the aggregator; Protobuf so that it evolves like the contract does.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct UserActivity {
    /// The user.
    #[prost(string, tag = "1")]
    pub user_id: String,
    /// The order's currency.
    #[prost(string, tag = "2")]
    pub currency: String,
    /// What happened.
    #[prost(enumeration = "Activity", tag = "3")]
    pub activity: i32,
    /// The amount paid (`Paid`) or refunded (`Cancelled`), minor units.
    #[prost(int64, tag = "4")]
    pub amount_minor: i64,
    /// The event's `occurred_at`, milliseconds since the epoch: its event time.
    #[prost(int64, tag = "5")]
    pub occurred_at_ms: i64,
}

/// What stage 1 made of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderOutcome {
    /// An activity to send to the user's stage.
    Activity(UserActivity),
    /// Applied, but nothing for the statistics (a shipment).
    Applied,
    /// At or below the order's last applied version: skipped.
    Duplicate,
    /// An event of an order whose creation was never seen: skipped (its user is
    /// unknown).
    UnknownOrder,
}

/// Stage 1: applies `event` to its order's state.
pub fn apply_order_event(orders: &mut TableStore<String, OrderState>, event: &OrderEvent) -> OrderOutcome {
    let key = event.order_id.to_string();
    let at = event.occurred_at.timestamp_millis();
    if let OrderEventPayload::Created { user_id, currency, .. } = &event.payload {
        if orders.get(&key).is_some_and(|state| state.last_version >= event.version) {
            return OrderOutcome::Duplicate;
        }
        let state = OrderState {
            user_id: user_id.to_string(),
            currency: currency.to_string(),
            last_version: event.version,
            paid_minor: None,
        };
        let activity = activity(&state, Activity::Created, 0, at);
        orders.put(key, state);
        return OrderOutcome::Activity(activity);
    }
    let Some(mut state) = orders.get(&key).cloned() else { return OrderOutcome::UnknownOrder };
    if state.last_version >= event.version {
        return OrderOutcome::Duplicate;
    }
    state.last_version = event.version;
    let outcome = match &event.payload {
        OrderEventPayload::Paid { amount_minor, .. } => {
            state.paid_minor = Some(*amount_minor);
            OrderOutcome::Activity(activity(&state, Activity::Paid, *amount_minor, at))
        }
        OrderEventPayload::Cancelled { .. } => {
            let refund = state.paid_minor.unwrap_or(0);
            OrderOutcome::Activity(activity(&state, Activity::Cancelled, refund, at))
        }
        _ => OrderOutcome::Applied,
    };
    orders.put(key, state);
    outcome
}

fn activity(state: &OrderState, kind: Activity, amount_minor: i64, occurred_at_ms: i64) -> UserActivity {
    UserActivity {
        user_id: state.user_id.clone(),
        currency: state.currency.clone(),
        activity: kind as i32,
        amount_minor,
        occurred_at_ms,
    }
}

/// One user's window in one currency, as stage 2 aggregates it.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct WindowStats {
    /// Orders created in the window.
    #[prost(uint64, tag = "1")]
    pub order_count: u64,
    /// Orders paid in the window.
    #[prost(uint64, tag = "2")]
    pub paid_count: u64,
    /// Payments made in the window.
    #[prost(int64, tag = "3")]
    pub revenue_minor: i64,
    /// Orders cancelled in the window.
    #[prost(uint64, tag = "4")]
    pub cancelled_count: u64,
    /// The payments of the orders cancelled in the window after being paid.
    #[prost(int64, tag = "5")]
    pub refunded_minor: i64,
}

/// The key of stage 2's windows: user and currency.
pub type UserCurrency = (String, String);

/// Stage 2: counts `activity` in the open windows of its event time.
pub fn apply_user_activity(
    windows: &mut WindowStore<UserCurrency, WindowStats>,
    activity: &UserActivity,
) -> Added {
    let key = (activity.user_id.clone(), activity.currency.clone());
    let kind = Activity::try_from(activity.activity).unwrap_or(Activity::Unspecified);
    windows.add(&key, activity.occurred_at_ms, |stats| match kind {
        Activity::Created => stats.order_count += 1,
        Activity::Paid => {
            stats.paid_count += 1;
            stats.revenue_minor = stats.revenue_minor.saturating_add(activity.amount_minor);
        }
        Activity::Cancelled => {
            stats.cancelled_count += 1;
            stats.refunded_minor = stats.refunded_minor.saturating_add(activity.amount_minor);
        }
        Activity::Unspecified => {}
    })
}

/// Why an emitted window cannot be written to `order-stats`.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The user or currency of the window is not valid.
    #[error("invalid {field}: {problem}")]
    Invalid {
        /// Which.
        field: &'static str,
        /// Why.
        problem: orders_domain::FieldError,
    },
    /// A window bound outside the range of timestamps.
    #[error("window bound {0} ms is out of range")]
    OutOfRange(i64),
}

fn instant(ms: i64) -> Result<DateTime<Utc>, OutputError> {
    DateTime::from_timestamp_millis(ms).ok_or(OutputError::OutOfRange(ms))
}

/// An emitted window as the message of `order-stats` (key: its user).
///
/// # Errors
/// When its user or currency does not make a valid message (cannot happen for
/// windows built from decoded events) or its bounds are out of range.
pub fn to_user_window_stats(
    emitted: &Emitted<UserCurrency, WindowStats>,
) -> Result<UserWindowStats, OutputError> {
    let (user, currency) = &emitted.key;
    let stats = &emitted.value;
    Ok(UserWindowStats {
        user_id: UserId::new(user.as_str())
            .map_err(|problem| OutputError::Invalid { field: "user_id", problem })?,
        window_start: instant(emitted.window.start_ms)?,
        window_end: instant(emitted.window.end_ms)?,
        order_count: stats.order_count,
        paid_count: stats.paid_count,
        revenue_minor: stats.revenue_minor,
        currency: Currency::new(currency)
            .map_err(|problem| OutputError::Invalid { field: "currency", problem })?,
        is_final: emitted.is_final,
        cancelled_count: stats.cancelled_count,
        refunded_minor: stats.refunded_minor,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone as _;
    use orders_domain::{CancelReason, LineItem, OrderId, PaymentId, Sku};
    use orders_streams::Windows;
    use prost::Message as _;
    use uuid::Uuid;

    use super::*;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 10, minute, 0).unwrap()
    }

    fn event(order: OrderId, version: u64, minute: u32, payload: OrderEventPayload) -> OrderEvent {
        OrderEvent { order_id: order, version, occurred_at: at(minute), payload }
    }

    fn created(order: OrderId, user: &str, minute: u32) -> OrderEvent {
        let items = vec![LineItem::new(Sku::new("SKU-1").unwrap(), 1, 500)];
        let payload = OrderEventPayload::Created {
            user_id: UserId::new(user).unwrap(),
            currency: Currency::new("EUR").unwrap(),
            items,
            total_minor: 500,
        };
        event(order, 1, minute, payload)
    }

    fn paid(order: OrderId, minute: u32) -> OrderEvent {
        let payload = OrderEventPayload::Paid {
            payment_id: PaymentId::new("pay").unwrap(),
            amount_minor: 500,
            currency: Currency::new("EUR").unwrap(),
        };
        event(order, 2, minute, payload)
    }

    fn cancelled(order: OrderId, version: u64, minute: u32) -> OrderEvent {
        event(
            order,
            version,
            minute,
            OrderEventPayload::Cancelled { reason: CancelReason::new("no").unwrap() },
        )
    }

    fn activity_of(outcome: OrderOutcome) -> UserActivity {
        match outcome {
            OrderOutcome::Activity(activity) => activity,
            other => panic!("expected an activity, got {other:?}"),
        }
    }

    #[test]
    fn the_order_stage_skips_duplicates_and_knows_the_refund() {
        let mut orders = TableStore::new();
        let order = OrderId::from_uuid(Uuid::now_v7());
        let first = activity_of(apply_order_event(&mut orders, &created(order, "alice", 1)));
        assert_eq!((first.activity, first.user_id.as_str()), (Activity::Created as i32, "alice"));
        assert_eq!(apply_order_event(&mut orders, &created(order, "alice", 1)), OrderOutcome::Duplicate);
        let pay = activity_of(apply_order_event(&mut orders, &paid(order, 2)));
        assert_eq!((pay.activity, pay.amount_minor), (Activity::Paid as i32, 500));
        assert_eq!(apply_order_event(&mut orders, &paid(order, 2)), OrderOutcome::Duplicate);
        let cancel = activity_of(apply_order_event(&mut orders, &cancelled(order, 3, 3)));
        assert_eq!((cancel.activity, cancel.amount_minor), (Activity::Cancelled as i32, 500), "the refund");
        assert_eq!(cancel.occurred_at_ms, at(3).timestamp_millis());
        // Cancelled before payment: nothing to refund.
        let unpaid = OrderId::from_uuid(Uuid::now_v7());
        apply_order_event(&mut orders, &created(unpaid, "bob", 1));
        assert_eq!(activity_of(apply_order_event(&mut orders, &cancelled(unpaid, 2, 4))).amount_minor, 0);
        // The state survives its changelog (Protobuf-encoded).
        let mut restored = TableStore::new();
        for change in orders.take_changes() {
            let value = change.value.map(|v| OrderState::decode(v.encode_to_vec().as_slice()).unwrap());
            restored.restore(orders_streams::TableChange { key: change.key, value });
        }
        assert_eq!(apply_order_event(&mut restored, &cancelled(order, 3, 3)), OrderOutcome::Duplicate);
        let stranger = OrderId::from_uuid(Uuid::now_v7());
        assert_eq!(apply_order_event(&mut restored, &paid(stranger, 2)), OrderOutcome::UnknownOrder);
    }

    #[test]
    fn the_user_stage_counts_per_window_and_currency() {
        let hour = Windows::tumbling(Duration::from_secs(3600)).unwrap().with_grace(Duration::from_secs(600));
        let mut windows: WindowStore<UserCurrency, WindowStats> = WindowStore::new(hour, Duration::ZERO);
        let mut orders = TableStore::new();
        let (a, b) = (OrderId::from_uuid(Uuid::now_v7()), OrderId::from_uuid(Uuid::now_v7()));
        for event in
            [created(a, "alice", 1), created(b, "alice", 2), paid(a, 3), paid(b, 4), cancelled(a, 3, 5)]
        {
            if let OrderOutcome::Activity(activity) = apply_order_event(&mut orders, &event) {
                apply_user_activity(&mut windows, &activity);
            }
        }
        let due = windows.updates_due(0);
        assert_eq!(due.len(), 1);
        let stats = to_user_window_stats(&due[0]).unwrap();
        assert_eq!(
            (
                stats.order_count,
                stats.paid_count,
                stats.revenue_minor,
                stats.cancelled_count,
                stats.refunded_minor
            ),
            (2, 2, 1000, 1, 500)
        );
        assert_eq!(
            (stats.window_start, stats.is_final),
            (Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap(), false)
        );
    }
}
