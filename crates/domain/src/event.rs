//! Events: what happened to an order. The only source of an order's state.
//!
//! Each event carries the aggregate version it produced: the first event of
//! an order has version 1, and every later one the next number, without gaps.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::values::{
    CancelReason, Currency, LineItem, Money, OrderId, PaymentId, ShipmentId, TrackingNumber, UserId,
};

/// Something that happened to one order, at one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEvent {
    /// The order it happened to.
    pub order_id: OrderId,
    /// The aggregate version this event produced (1 for `OrderCreated`).
    pub version: u64,
    /// When the command that produced it was handled.
    pub occurred_at: DateTime<Utc>,
    /// What happened.
    pub payload: OrderEventPayload,
}

impl OrderEvent {
    /// The event's type name: `"OrderCreated"`, `"OrderPaid"`,
    /// `"OrderShipped"` or `"OrderCancelled"`.
    pub fn event_type(&self) -> &'static str {
        self.payload.event_type()
    }
}

/// What happened, with its data. In JSON it is tagged by `"type"` with the
/// event type name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum OrderEventPayload {
    /// The order was created, pending payment.
    #[serde(rename = "OrderCreated")]
    Created {
        /// Who ordered.
        user_id: UserId,
        /// The order's currency.
        currency: Currency,
        /// The lines, at least one.
        items: Vec<LineItem>,
        /// The sum of the lines, in minor units.
        total_minor: i64,
    },
    /// The order was paid, exactly its total.
    #[serde(rename = "OrderPaid")]
    Paid {
        /// The payment provider's reference.
        payment_id: PaymentId,
        /// The amount paid, in minor units (the order's total).
        amount_minor: i64,
        /// The payment's currency (the order's).
        currency: Currency,
    },
    /// The order was handed to a carrier.
    #[serde(rename = "OrderShipped")]
    Shipped {
        /// The shipment's reference.
        shipment_id: ShipmentId,
        /// The carrier's tracking number.
        tracking_number: TrackingNumber,
    },
    /// The order was cancelled.
    #[serde(rename = "OrderCancelled")]
    Cancelled {
        /// Why.
        reason: CancelReason,
    },
}

impl OrderEventPayload {
    /// Type name of [`OrderEventPayload::Created`].
    pub const ORDER_CREATED: &'static str = "OrderCreated";
    /// Type name of [`OrderEventPayload::Paid`].
    pub const ORDER_PAID: &'static str = "OrderPaid";
    /// Type name of [`OrderEventPayload::Shipped`].
    pub const ORDER_SHIPPED: &'static str = "OrderShipped";
    /// Type name of [`OrderEventPayload::Cancelled`].
    pub const ORDER_CANCELLED: &'static str = "OrderCancelled";

    /// The event's type name (`"OrderCreated"`, ...).
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::Created { .. } => Self::ORDER_CREATED,
            Self::Paid { .. } => Self::ORDER_PAID,
            Self::Shipped { .. } => Self::ORDER_SHIPPED,
            Self::Cancelled { .. } => Self::ORDER_CANCELLED,
        }
    }

    /// The money that changed hands: the total of a created order, the
    /// amount of a payment.
    pub fn money(&self) -> Option<Money> {
        match self {
            Self::Created { currency, total_minor, .. } => Some(Money::new(*total_minor, *currency)),
            Self::Paid { amount_minor, currency, .. } => Some(Money::new(*amount_minor, *currency)),
            Self::Shipped { .. } | Self::Cancelled { .. } => None,
        }
    }
}
