//! Snapshots: an order's state at one version, so that a store can load a
//! snapshot plus the events after it instead of the whole history.
//!
//! ```
//! # use orders_domain::*;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let history: Vec<OrderEvent> = Vec::new();
//! let order = Order::from_events(&history)?;
//! let json = serde_json::to_string(&order.snapshot())?; // store it
//! let restored = Order::from_snapshot(serde_json::from_str(&json)?)?;
//! let later: Vec<OrderEvent> = Vec::new(); // events with version > restored.version()
//! assert_eq!(restored.replay(&later)?, order);
//! # Ok(())
//! # }
//! ```
//!
//! The format is versioned by [`OrderSnapshot::schema_version`]. A snapshot
//! of another schema is refused with [`SnapshotError::UnsupportedSchema`];
//! the store then replays the whole history (snapshots are a cache, the
//! events are the truth).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::command::order_total;
use crate::error::SnapshotError;
use crate::order::{Cancellation, Details, Order, Payment, Shipment};
use crate::values::{Currency, LineItem, OrderId, OrderStatus, UserId};

/// The order's state at `version`, serializable with serde (JSON in the
/// store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSnapshot {
    /// The snapshot format; [`OrderSnapshot::SCHEMA_VERSION`] when written by
    /// this code.
    pub schema_version: u32,
    /// The version of the last event folded into it.
    pub version: u64,
    /// The order; `None` before creation.
    pub order: Option<OrderSnapshotData>,
}

/// The fields of a created order in an [`OrderSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSnapshotData {
    /// See [`Order::id`].
    pub id: OrderId,
    /// See [`Order::user_id`].
    pub user_id: UserId,
    /// See [`Order::currency`].
    pub currency: Currency,
    /// See [`Order::items`].
    pub items: Vec<LineItem>,
    /// See [`Order::total`].
    pub total_minor: i64,
    /// See [`Order::status`].
    pub status: OrderStatus,
    /// See [`Order::created_at`].
    pub created_at: DateTime<Utc>,
    /// See [`Order::updated_at`].
    pub updated_at: DateTime<Utc>,
    /// See [`Order::payment`].
    pub payment: Option<Payment>,
    /// See [`Order::shipment`].
    pub shipment: Option<Shipment>,
    /// See [`Order::cancellation`].
    pub cancellation: Option<Cancellation>,
}

impl OrderSnapshot {
    /// The snapshot schema this code writes and reads.
    pub const SCHEMA_VERSION: u32 = 1;
}

impl Order {
    /// The state as a snapshot.
    pub fn snapshot(&self) -> OrderSnapshot {
        OrderSnapshot {
            schema_version: OrderSnapshot::SCHEMA_VERSION,
            version: self.version(),
            order: self.details().map(|d| OrderSnapshotData {
                id: d.id,
                user_id: d.user_id.clone(),
                currency: d.currency,
                items: d.items.clone(),
                total_minor: d.total_minor,
                status: d.status,
                created_at: d.created_at,
                updated_at: d.updated_at,
                payment: d.payment.clone(),
                shipment: d.shipment.clone(),
                cancellation: d.cancellation.clone(),
            }),
        }
    }

    /// Restores a snapshot, checking that it is of this schema and that its
    /// fields agree with each other and with the rules.
    pub fn from_snapshot(snapshot: OrderSnapshot) -> Result<Self, SnapshotError> {
        use SnapshotError::Inconsistent;

        if snapshot.schema_version != OrderSnapshot::SCHEMA_VERSION {
            return Err(SnapshotError::UnsupportedSchema {
                found: snapshot.schema_version,
                supported: OrderSnapshot::SCHEMA_VERSION,
            });
        }
        let Some(d) = snapshot.order else {
            return if snapshot.version == 0 {
                Ok(Self::default())
            } else {
                Err(Inconsistent("an order that is not created must be at version 0"))
            };
        };
        let total = order_total(&d.items).map_err(SnapshotError::InvalidItems)?;
        if total != d.total_minor {
            return Err(Inconsistent("total_minor is not the sum of the items"));
        }
        // The fewest events that can lead to the status.
        let (min_version, ok) = match d.status {
            OrderStatus::Pending => {
                (1, d.payment.is_none() && d.shipment.is_none() && d.cancellation.is_none())
            }
            OrderStatus::Paid => (2, d.payment.is_some() && d.shipment.is_none() && d.cancellation.is_none()),
            OrderStatus::Shipped => {
                (3, d.payment.is_some() && d.shipment.is_some() && d.cancellation.is_none())
            }
            OrderStatus::Cancelled => (2, d.shipment.is_none() && d.cancellation.is_some()),
        };
        if !ok {
            return Err(Inconsistent("payment, shipment and cancellation do not match the status"));
        }
        if snapshot.version < min_version {
            return Err(Inconsistent("the version is too low for the status"));
        }
        if d.payment.as_ref().is_some_and(|p| p.amount_minor != total) {
            return Err(Inconsistent("the payment is not the order total"));
        }
        Ok(Self::from_parts(
            snapshot.version,
            Some(Details {
                id: d.id,
                user_id: d.user_id,
                currency: d.currency,
                items: d.items,
                total_minor: d.total_minor,
                status: d.status,
                created_at: d.created_at,
                updated_at: d.updated_at,
                payment: d.payment,
                shipment: d.shipment,
                cancellation: d.cancellation,
            }),
        ))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::error::OrderError;
    use crate::values::{PaymentId, Sku};
    use crate::{CreateOrder, PayOrder};

    fn paid_order() -> Order {
        let now = Utc.timestamp_opt(1_750_000_000, 0).unwrap();
        let id = OrderId::from_uuid(uuid::Uuid::from_u128(1));
        let create = CreateOrder::new(
            UserId::new("u").unwrap(),
            Currency::new("EUR").unwrap(),
            vec![LineItem::new(Sku::new("a").unwrap(), 3, 100)],
        )
        .unwrap();
        let mut order = Order::default();
        for e in order.create(id, create, now).unwrap() {
            order.apply(&e).unwrap();
        }
        let pay = PayOrder::new(PaymentId::new("p").unwrap(), 300, None).unwrap();
        for e in order.pay(pay, now).unwrap() {
            order.apply(&e).unwrap();
        }
        order
    }

    #[test]
    fn round_trips_through_json() {
        for order in [Order::default(), paid_order()] {
            let json = serde_json::to_string(&order.snapshot()).unwrap();
            let back: OrderSnapshot = serde_json::from_str(&json).unwrap();
            assert_eq!(Order::from_snapshot(back).unwrap(), order);
        }
    }

    #[test]
    fn refuses_another_schema() {
        let mut snapshot = paid_order().snapshot();
        snapshot.schema_version = 2;
        assert_eq!(
            Order::from_snapshot(snapshot),
            Err(SnapshotError::UnsupportedSchema { found: 2, supported: 1 })
        );
    }

    #[test]
    fn refuses_inconsistent_snapshots() {
        let good = paid_order().snapshot();
        let broken = |f: fn(&mut OrderSnapshot)| {
            let mut s = good.clone();
            f(&mut s);
            Order::from_snapshot(s).unwrap_err()
        };
        assert_eq!(
            broken(|s| s.order = None),
            Inconsistent("an order that is not created must be at version 0")
        );
        assert_eq!(broken(|s| s.version = 1), Inconsistent("the version is too low for the status"));
        assert_eq!(
            broken(|s| s.order.as_mut().unwrap().total_minor = 1),
            Inconsistent("total_minor is not the sum of the items")
        );
        assert_eq!(
            broken(|s| s.order.as_mut().unwrap().status = OrderStatus::Shipped),
            Inconsistent("payment, shipment and cancellation do not match the status")
        );
        assert_eq!(
            broken(|s| s.order.as_mut().unwrap().payment.as_mut().unwrap().amount_minor = 1),
            Inconsistent("the payment is not the order total")
        );
        assert_eq!(
            broken(|s| s.order.as_mut().unwrap().items.clear()),
            SnapshotError::InvalidItems(OrderError::NoItems)
        );
    }

    use SnapshotError::Inconsistent;
}
