//! [`Queries`]: reading the read models (orders, and the windows of
//! [`crate::windows`]) for the query API, one statement (one snapshot) per answer.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::Serialize;
use uuid::Uuid;

use crate::problem::QueryError;

/// An order as `GET /queries/orders/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    /// The order.
    pub order_id: Uuid,
    /// Who ordered.
    pub user_id: String,
    /// `pending`, `paid`, `shipped` or `cancelled`.
    pub status: String,
    /// ISO 4217 code.
    pub currency: String,
    /// The total, in minor units.
    pub total_minor: i64,
    /// The line items: `[{sku, quantity, unit_price_minor}]`.
    pub items: serde_json::Value,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its last event happened.
    pub updated_at: DateTime<Utc>,
    /// Its payment, once paid.
    pub payment: Option<Payment>,
    /// Its shipment, once shipped.
    pub shipment: Option<Shipment>,
    /// Its cancellation, once cancelled.
    pub cancellation: Option<Cancellation>,
    /// The version of the last event applied.
    pub version: i64,
    /// The events applied, oldest first: `[{version, type, occurred_at}]` (derived from
    /// the status timestamps: an order's life is linear).
    pub history: Vec<HistoryEntry>,
    /// Present when an event arrived after a missing one: the version the view waits for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_version: Option<i64>,
    /// The versions that arrived after the missing one and wait for it (parked), when
    /// there are any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parked_versions: Vec<i64>,
}

/// One event of an order's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// Its version.
    pub version: u64,
    /// Its type (`OrderCreated`, `OrderPaid`, `OrderShipped`, `OrderCancelled`).
    #[serde(rename = "type")]
    pub event_type: &'static str,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// The history of an order from its status timestamps: created, then paid, then shipped
/// or cancelled (at most one of each, in that order, is what the order's rules allow).
pub fn history(
    created_at: DateTime<Utc>,
    paid_at: Option<DateTime<Utc>>,
    shipped_at: Option<DateTime<Utc>>,
    cancelled_at: Option<DateTime<Utc>>,
) -> Vec<HistoryEntry> {
    let steps = [
        ("OrderCreated", Some(created_at)),
        ("OrderPaid", paid_at),
        ("OrderShipped", shipped_at),
        ("OrderCancelled", cancelled_at),
    ];
    steps
        .into_iter()
        .filter_map(|(event_type, at)| at.map(|occurred_at| (event_type, occurred_at)))
        .zip(1..)
        .map(|((event_type, occurred_at), version)| HistoryEntry { version, event_type, occurred_at })
        .collect()
}

/// A payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Payment {
    /// The payment provider's reference.
    pub payment_id: String,
    /// The amount paid, in minor units.
    pub amount_minor: Option<i64>,
    /// When.
    pub paid_at: Option<DateTime<Utc>>,
}

/// A shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Shipment {
    /// The shipment's reference.
    pub shipment_id: String,
    /// The carrier's tracking number.
    pub tracking_number: Option<String>,
    /// When.
    pub shipped_at: Option<DateTime<Utc>>,
}

/// A cancellation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Cancellation {
    /// Why.
    pub reason: String,
    /// When.
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// One order in a user's list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrderSummary {
    /// The order.
    pub order_id: Uuid,
    /// Its status.
    pub status: String,
    /// Its currency.
    pub currency: String,
    /// Its total, in minor units.
    pub total_minor: i64,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its last event happened.
    pub updated_at: DateTime<Utc>,
    /// Its version.
    pub version: i64,
}

/// One page of a user's orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UserOrders {
    /// The user.
    pub user_id: String,
    /// The page (from 1).
    pub page: u32,
    /// The page size.
    pub page_size: u32,
    /// How many orders the user has.
    pub total: i64,
    /// Whether later pages hold more.
    pub has_more: bool,
    /// The orders, newest first.
    pub orders: Vec<OrderSummary>,
}

/// Orders by current status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StatusCounts {
    /// Waiting for payment.
    pub pending: i64,
    /// Paid, not shipped.
    pub paid: i64,
    /// Shipped.
    pub shipped: i64,
    /// Cancelled.
    pub cancelled: i64,
}

/// Spending in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Spend {
    /// The currency.
    pub currency: String,
    /// Orders paid (and not cancelled) in it.
    pub paid_orders: i64,
    /// Their payments, in minor units.
    pub total_spent_minor: i64,
    /// The average paid order, rounded to the nearest minor unit.
    pub average_order_value_minor: i64,
}

/// A user's statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UserStats {
    /// The user.
    pub user_id: String,
    /// Orders created.
    pub order_count: i64,
    /// Orders paid and not cancelled (paid or shipped).
    pub paid_count: i64,
    /// Orders by current status.
    pub orders_by_status: StatusCounts,
    /// Spending by currency (an order is spent once paid, until cancelled).
    pub spent: Vec<Spend>,
}

/// One window of a user, as `GET /queries/users/{user_id}/windows` shows it: the latest
/// `UserWindowStats` of the window on `order-stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct WindowView {
    /// Start of the window, inclusive.
    pub window_start: DateTime<Utc>,
    /// End of the window, exclusive.
    pub window_end: DateTime<Utc>,
    /// The currency of the amounts.
    pub currency: String,
    /// Orders created in the window.
    pub order_count: i64,
    /// Orders paid in the window.
    pub paid_count: i64,
    /// Orders cancelled in the window.
    pub cancelled_count: i64,
    /// The payments made in the window, in minor units.
    pub revenue_minor: i64,
    /// The payments of the orders cancelled in the window after being paid.
    pub refunded_minor: i64,
    /// Whether the window is closed: these values are its last.
    #[serde(rename = "final")]
    pub is_final: bool,
}

/// A user's windows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UserWindows {
    /// The user.
    pub user_id: String,
    /// The windows overlapping the bounds asked, newest first (by start, then end, then
    /// currency); at most [`Queries::MAX_WINDOWS`], and never only some of the windows of
    /// a start when more follow.
    pub windows: Vec<WindowView>,
    /// Whether older windows within the bounds were left out (ask again with `to` set to
    /// the oldest `window_start` here).
    pub has_more: bool,
}

/// The read side's queries.
#[derive(Debug, Clone)]
pub struct Queries {
    pool: Pool,
    windows: Pool,
}

impl Queries {
    /// The most windows one answer holds.
    pub const MAX_WINDOWS: usize = 1000;

    /// Queries over `pool` (whose `search_path` is the live read model) and `windows`
    /// (whose `search_path` is the windows read model, [`crate::windows::SCHEMA`]).
    pub fn new(pool: Pool, windows: Pool) -> Self {
        Self { pool, windows }
    }

    /// The user's windows that overlap `[from, to)` (either bound optional), newest
    /// first; an unknown user has none.
    #[tracing::instrument(skip_all, fields(user_id = %user_id))]
    pub async fn user_windows(
        &self,
        user_id: &str,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> Result<UserWindows, QueryError> {
        let client = self.windows.get().await?;
        let stmt = client.prepare_cached(include_str!("sql/list_user_windows.sql")).await?;
        let limit = i64::try_from(Self::MAX_WINDOWS + 1).unwrap_or(i64::MAX);
        let rows = client.query(&stmt, &[&user_id, &from, &to, &limit]).await?;
        let has_more = rows.len() > Self::MAX_WINDOWS;
        let mut shown = rows.len().min(Self::MAX_WINDOWS);
        if has_more {
            // A page never ends inside a start: the next page asks for the windows that
            // start before the oldest start shown, so the rest of that start would be
            // skipped. (Unless one start alone fills the page.)
            let start = |i: usize| rows[i].get::<_, DateTime<Utc>>("window_start");
            let cut = (0..shown).rev().find(|&i| start(i) != start(shown)).map_or(shown, |i| i + 1);
            shown = if cut == 0 { shown } else { cut };
        }
        let windows = rows
            .iter()
            .take(shown)
            .map(|row| WindowView {
                window_start: row.get("window_start"),
                window_end: row.get("window_end"),
                currency: row.get("currency"),
                order_count: row.get("order_count"),
                paid_count: row.get("paid_count"),
                cancelled_count: row.get("cancelled_count"),
                revenue_minor: row.get("revenue_minor"),
                refunded_minor: row.get("refunded_minor"),
                is_final: row.get("final"),
            })
            .collect();
        Ok(UserWindows { user_id: user_id.to_string(), windows, has_more })
    }

    /// One order, if the read model has it.
    #[tracing::instrument(skip_all, fields(order_id = %order_id))]
    pub async fn order(&self, order_id: Uuid) -> Result<Option<OrderView>, QueryError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(include_str!("sql/get_order.sql")).await?;
        let Some(row) = client.query_opt(&stmt, &[&order_id]).await? else { return Ok(None) };
        let payment_id: Option<String> = row.get("payment_id");
        let shipment_id: Option<String> = row.get("shipment_id");
        let cancel_reason: Option<String> = row.get("cancel_reason");
        let created_at = row.get("created_at");
        let history = history(created_at, row.get("paid_at"), row.get("shipped_at"), row.get("cancelled_at"));
        Ok(Some(OrderView {
            order_id,
            user_id: row.get("user_id"),
            status: row.get("status"),
            currency: row.get("currency"),
            total_minor: row.get("total_minor"),
            items: row.get("items"),
            created_at,
            updated_at: row.get("updated_at"),
            payment: payment_id.map(|payment_id| Payment {
                payment_id,
                amount_minor: row.get("amount_paid_minor"),
                paid_at: row.get("paid_at"),
            }),
            shipment: shipment_id.map(|shipment_id| Shipment {
                shipment_id,
                tracking_number: row.get("tracking_number"),
                shipped_at: row.get("shipped_at"),
            }),
            cancellation: cancel_reason
                .map(|reason| Cancellation { reason, cancelled_at: row.get("cancelled_at") }),
            version: row.get("version"),
            history,
            missing_version: row.get("missing_version"),
            parked_versions: row.get("parked_versions"),
        }))
    }

    /// Whether `partitions` partitions all have a clock at or past `after` (see
    /// [`crate::waiters`]).
    pub async fn all_partitions_past(
        &self,
        after: DateTime<Utc>,
        partitions: usize,
    ) -> Result<bool, QueryError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(include_str!("sql/partitions_past.sql")).await?;
        let row = client.query_one(&stmt, &[&after]).await?;
        let (with_clock, past): (i64, i64) = (row.get("partitions"), row.get("past"));
        Ok(partitions > 0 && usize::try_from(past).is_ok_and(|p| p >= partitions) && with_clock == past)
    }

    /// The parked versions of an order (events waiting for a missing version), oldest
    /// first: for an order without a view, they show that its first event is missing.
    #[tracing::instrument(skip_all, fields(order_id = %order_id))]
    pub async fn parked_versions(&self, order_id: Uuid) -> Result<Vec<i64>, QueryError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(include_str!("sql/parked_versions.sql")).await?;
        let rows = client.query(&stmt, &[&order_id]).await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// One page of a user's orders, newest first; `None` when the user is unknown.
    #[tracing::instrument(skip_all, fields(user_id = %user_id))]
    pub async fn user_orders(
        &self,
        user_id: &str,
        page: u32,
        page_size: u32,
    ) -> Result<Option<UserOrders>, QueryError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(include_str!("sql/list_user_orders.sql")).await?;
        let offset = i64::from(page - 1) * i64::from(page_size);
        let rows = client.query(&stmt, &[&user_id, &i64::from(page_size), &offset]).await?;
        let Some(first) = rows.first() else { return Ok(None) };
        let total: i64 = first.get("order_count");
        let mut orders = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(order_id) = row.get::<_, Option<Uuid>>("order_id") else { continue };
            orders.push(OrderSummary {
                order_id,
                status: row.get("status"),
                currency: row.get("currency"),
                total_minor: row.get("total_minor"),
                created_at: row.get("created_at"),
                updated_at: row.get("updated_at"),
                version: row.get("version"),
            });
        }
        Ok(Some(UserOrders {
            user_id: user_id.to_string(),
            page,
            page_size,
            total,
            has_more: offset + i64::from(page_size) < total,
            orders,
        }))
    }

    /// A user's statistics; `None` when the user is unknown.
    #[tracing::instrument(skip_all, fields(user_id = %user_id))]
    pub async fn user_stats(&self, user_id: &str) -> Result<Option<UserStats>, QueryError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(include_str!("sql/get_user_stats.sql")).await?;
        let rows = client.query(&stmt, &[&user_id]).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut counts = StatusCounts { pending: 0, paid: 0, shipped: 0, cancelled: 0 };
        let mut order_count = 0;
        let mut spent = Vec::new();
        for row in &rows {
            let (paid, shipped): (i64, i64) = (row.get("paid_count"), row.get("shipped_count"));
            order_count += row.get::<_, i64>("order_count");
            counts.pending += row.get::<_, i64>("pending_count");
            counts.paid += paid;
            counts.shipped += shipped;
            counts.cancelled += row.get::<_, i64>("cancelled_count");
            let total: i64 = row.get("spent_minor");
            if paid + shipped > 0 {
                spent.push(Spend {
                    currency: row.get("currency"),
                    paid_orders: paid + shipped,
                    total_spent_minor: total,
                    average_order_value_minor: average(total, paid + shipped),
                });
            }
        }
        Ok(Some(UserStats {
            user_id: user_id.to_string(),
            order_count,
            paid_count: counts.paid + counts.shipped,
            orders_by_status: counts,
            spent,
        }))
    }
}

/// `total / count` rounded to the nearest integer (halves away from zero); 0 for none.
fn average(total: i64, count: i64) -> i64 {
    if count <= 0 {
        return 0;
    }
    let (total, count) = (i128::from(total), i128::from(count));
    let rounded =
        if total >= 0 { (2 * total + count) / (2 * count) } else { (2 * total - count) / (2 * count) };
    i64::try_from(rounded).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::average;

    #[test]
    fn history_follows_the_linear_life_of_an_order() {
        use chrono::TimeZone;
        let t = |m| chrono::Utc.with_ymd_and_hms(2025, 1, 1, 0, m, 0).unwrap();
        let types = |h: Vec<super::HistoryEntry>| {
            h.into_iter().map(|e| (e.version, e.event_type)).collect::<Vec<_>>()
        };
        assert_eq!(types(super::history(t(0), None, None, None)), [(1, "OrderCreated")]);
        assert_eq!(
            types(super::history(t(0), Some(t(1)), None, Some(t(2)))),
            [(1, "OrderCreated"), (2, "OrderPaid"), (3, "OrderCancelled")]
        );
        assert_eq!(
            types(super::history(t(0), None, None, Some(t(2)))),
            [(1, "OrderCreated"), (2, "OrderCancelled")]
        );
        assert_eq!(
            types(super::history(t(0), Some(t(1)), Some(t(2)), None)),
            [(1, "OrderCreated"), (2, "OrderPaid"), (3, "OrderShipped")]
        );
    }

    #[test]
    fn averages_round_to_the_nearest_minor_unit() {
        assert_eq!(average(1000, 3), 333);
        assert_eq!(average(1001, 2), 501);
        assert_eq!(average(999, 2), 500);
        assert_eq!(average(0, 0), 0);
        assert_eq!(average(i64::MAX, 1), i64::MAX);
    }
}
