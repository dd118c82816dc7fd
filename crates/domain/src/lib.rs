//! The `Order` aggregate: its commands, events and rules. Pure Rust: no I/O,
//! no async, no clock (time is passed in), no randomness (ids are passed in).
//!
//! Every service shares this crate; `orders-events` maps its types to and from
//! the Protobuf contract.
//!
//! # Layout
//!
//! - values: [`OrderId`], the bounded texts ([`UserId`], [`Sku`],
//!   [`PaymentId`], [`ShipmentId`], [`TrackingNumber`], [`CancelReason`]),
//!   [`Currency`], [`Money`], [`LineItem`], [`OrderStatus`]. Each can only
//!   hold a valid value.
//! - commands: [`CreateOrder`], [`PayOrder`], [`ShipOrder`], [`CancelOrder`],
//!   each built from a plain `*Input` (the HTTP JSON body) with `TryFrom`,
//!   which names the first field at fault.
//! - events: [`OrderEvent`] with its version and [`OrderEventPayload`].
//! - the aggregate: [`Order`], rebuilt from events with
//!   [`Order::from_events`]; its command methods check the rules against the
//!   current state and return new events, never changing the state.
//! - snapshots: [`OrderSnapshot`], from [`Order::snapshot`] and back with
//!   [`Order::from_snapshot`].
//! - errors: [`OrderError`] (one variant per rule, with an [`ErrorKind`] that
//!   maps to an HTTP status), [`FieldError`] and [`Field`], [`ReplayError`],
//!   [`SnapshotError`].
//!
//! # Rules
//!
//! - An order is created once, with 1 to [`MAX_ITEMS`] items, each with a
//!   quantity > 0 and a unit price >= 0; the total is computed from the items
//!   and must fit in an `i64` of minor units.
//! - Only a pending order is paid, exactly its total, in its currency.
//! - Only a paid order is shipped.
//! - An order is cancelled unless shipped or already cancelled.
//! - Ids and texts are not blank, bounded in length and free of control
//!   characters.
//! - Money is integer minor units plus an ISO 4217 code, never floats.

mod command;
mod error;
mod event;
mod order;
mod snapshot;
mod values;

pub use command::{
    CancelOrder, CancelOrderInput, CreateOrder, CreateOrderInput, LineItemInput, MAX_ITEMS, PayOrder,
    PayOrderInput, ShipOrder, ShipOrderInput, order_total,
};
pub use error::{ErrorKind, Field, FieldError, OrderError, ReplayError, SnapshotError};
pub use event::{OrderEvent, OrderEventPayload};
pub use order::{Cancellation, Order, Payment, Shipment};
pub use snapshot::{OrderSnapshot, OrderSnapshotData};
pub use values::{
    CancelReason, Currency, LineItem, Money, OrderId, OrderStatus, PaymentId, ShipmentId, Sku,
    TrackingNumber, UserId,
};
