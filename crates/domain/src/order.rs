//! The `Order` aggregate: state rebuilt from events, and the commands that
//! check the rules against that state and return new events.
//!
//! The life of a command in a store:
//!
//! ```
//! # use orders_domain::*;
//! # use chrono::{TimeZone, Utc};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let history: Vec<OrderEvent> = Vec::new();
//! # let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
//! let order = Order::from_events(&history)?; // load
//! let cmd = CreateOrder::try_from(CreateOrderInput {
//!     user_id: "alice".into(),
//!     currency: "EUR".into(),
//!     items: vec![LineItemInput { sku: "book".into(), quantity: 2, unit_price_minor: 1250 }],
//! })?; // parse at the edge
//! let id = OrderId::from_uuid(uuid::Uuid::nil()); // callers use Uuid::now_v7()
//! let events = order.create(id, cmd, now)?; // decide
//! // append `events` with expected version `order.version()`, then:
//! let mut order = order;
//! for event in &events {
//!     order.apply(event)?;
//! }
//! assert_eq!(order.version(), 1);
//! assert_eq!(order.status(), Some(OrderStatus::Pending));
//! assert_eq!(order.total().map(|m| m.amount_minor), Some(2500));
//! # Ok(())
//! # }
//! ```

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::command::{CancelOrder, CreateOrder, PayOrder, ShipOrder, order_total};
use crate::error::{OrderError, ReplayError};
use crate::event::{OrderEvent, OrderEventPayload};
use crate::values::{
    CancelReason, Currency, LineItem, Money, OrderId, OrderStatus, PaymentId, ShipmentId, TrackingNumber,
    UserId,
};

/// The payment of a paid order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The payment provider's reference.
    pub payment_id: PaymentId,
    /// The amount paid, in minor units of the order's currency.
    pub amount_minor: i64,
    /// When it was recorded.
    pub paid_at: DateTime<Utc>,
}

/// The shipment of a shipped order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    /// The shipment's reference.
    pub shipment_id: ShipmentId,
    /// The carrier's tracking number.
    pub tracking_number: TrackingNumber,
    /// When it was recorded.
    pub shipped_at: DateTime<Utc>,
}

/// The cancellation of a cancelled order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    /// Why.
    pub reason: CancelReason,
    /// When it was recorded.
    pub cancelled_at: DateTime<Utc>,
}

/// The state of a created order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Details {
    pub(crate) id: OrderId,
    pub(crate) user_id: UserId,
    pub(crate) currency: Currency,
    pub(crate) items: Vec<LineItem>,
    pub(crate) total_minor: i64,
    pub(crate) status: OrderStatus,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) payment: Option<Payment>,
    pub(crate) shipment: Option<Shipment>,
    pub(crate) cancellation: Option<Cancellation>,
}

/// One order, as its events made it.
///
/// `Order::default()` is the order before its first event: not created,
/// version 0. The only ways to change an `Order` are [`Order::apply`] and
/// [`Order::replay`]; the command methods (`create`, `pay`, `ship`,
/// `cancel`) take `&self`, check the rules and return the events to store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Order {
    version: u64,
    details: Option<Details>,
}

impl Order {
    /// Rebuilds an order from its whole history, oldest first.
    ///
    /// An empty history gives the not-yet-created order. A gap in versions,
    /// an event of another order or an event that breaks a rule is an error.
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a OrderEvent>) -> Result<Self, ReplayError> {
        Self::default().replay(events)
    }

    /// Applies later events to this state (for example to a snapshot
    /// restored with [`Order::from_snapshot`](crate::Order::from_snapshot)).
    pub fn replay<'a>(
        mut self,
        events: impl IntoIterator<Item = &'a OrderEvent>,
    ) -> Result<Self, ReplayError> {
        for event in events {
            self.apply(event)?;
        }
        Ok(self)
    }

    /// Applies one event: the next version, of this order, allowed by the
    /// rules in the current state. On error the state is left untouched.
    pub fn apply(&mut self, event: &OrderEvent) -> Result<(), ReplayError> {
        let expected = self.version + 1;
        if event.version != expected {
            return Err(ReplayError::VersionGap { expected, found: event.version });
        }
        if let Some(details) = &self.details
            && details.id != event.order_id
        {
            return Err(ReplayError::OrderIdMismatch {
                version: event.version,
                expected: details.id,
                found: event.order_id,
            });
        }
        let rejected =
            |rule| ReplayError::Rejected { version: event.version, event_type: event.event_type(), rule };
        let at = event.occurred_at;
        match &event.payload {
            OrderEventPayload::Created { user_id, currency, items, total_minor } => {
                self.check_create().map_err(rejected)?;
                let expected_total = order_total(items).map_err(rejected)?;
                if expected_total != *total_minor {
                    return Err(ReplayError::TotalMismatch {
                        version: event.version,
                        expected: expected_total,
                        found: *total_minor,
                    });
                }
                self.details = Some(Details {
                    id: event.order_id,
                    user_id: user_id.clone(),
                    currency: *currency,
                    items: items.clone(),
                    total_minor: *total_minor,
                    status: OrderStatus::Pending,
                    created_at: at,
                    updated_at: at,
                    payment: None,
                    shipment: None,
                    cancellation: None,
                });
            }
            OrderEventPayload::Paid { payment_id, amount_minor, currency } => {
                let details = self.pending_details_for_payment(*amount_minor, Some(*currency));
                let details = details.map_err(rejected)?;
                details.status = OrderStatus::Paid;
                details.updated_at = at;
                details.payment = Some(Payment {
                    payment_id: payment_id.clone(),
                    amount_minor: *amount_minor,
                    paid_at: at,
                });
            }
            OrderEventPayload::Shipped { shipment_id, tracking_number } => {
                let details = self.details_for_shipment().map_err(rejected)?;
                details.status = OrderStatus::Shipped;
                details.updated_at = at;
                details.shipment = Some(Shipment {
                    shipment_id: shipment_id.clone(),
                    tracking_number: tracking_number.clone(),
                    shipped_at: at,
                });
            }
            OrderEventPayload::Cancelled { reason } => {
                let details = self.details_for_cancel().map_err(rejected)?;
                details.status = OrderStatus::Cancelled;
                details.updated_at = at;
                details.cancellation = Some(Cancellation { reason: reason.clone(), cancelled_at: at });
            }
        }
        self.version = expected;
        Ok(())
    }

    // ---- commands -------------------------------------------------------

    /// Creates the order `id`. Rules: an order is created only once; the
    /// item rules were checked when `cmd` was built.
    pub fn create(
        &self,
        id: OrderId,
        cmd: CreateOrder,
        now: DateTime<Utc>,
    ) -> Result<Vec<OrderEvent>, OrderError> {
        self.check_create()?;
        let total_minor = cmd.total().amount_minor;
        let (user_id, currency, items) = cmd.into_parts();
        Ok(vec![OrderEvent {
            order_id: id,
            version: self.version + 1,
            occurred_at: now,
            payload: OrderEventPayload::Created { user_id, currency, items, total_minor },
        }])
    }

    /// Pays the order. Rules: only a pending order; only exactly its total;
    /// only in its currency.
    pub fn pay(&self, cmd: PayOrder, now: DateTime<Utc>) -> Result<Vec<OrderEvent>, OrderError> {
        let details = self.existing()?;
        check_payment(details, cmd.amount_minor(), cmd.currency())?;
        Ok(vec![self.next_event(
            details.id,
            now,
            OrderEventPayload::Paid {
                payment_id: cmd.payment_id().clone(),
                amount_minor: cmd.amount_minor(),
                currency: details.currency,
            },
        )])
    }

    /// Ships the order. Rule: only a paid order.
    pub fn ship(&self, cmd: ShipOrder, now: DateTime<Utc>) -> Result<Vec<OrderEvent>, OrderError> {
        let details = self.existing()?;
        check_shipment(details)?;
        Ok(vec![self.next_event(
            details.id,
            now,
            OrderEventPayload::Shipped { shipment_id: cmd.shipment_id, tracking_number: cmd.tracking_number },
        )])
    }

    /// Cancels the order. Rule: not once shipped, not twice.
    pub fn cancel(&self, cmd: CancelOrder, now: DateTime<Utc>) -> Result<Vec<OrderEvent>, OrderError> {
        let details = self.existing()?;
        check_cancel(details)?;
        Ok(vec![self.next_event(details.id, now, OrderEventPayload::Cancelled { reason: cmd.reason })])
    }

    // ---- getters --------------------------------------------------------

    /// The version of the last applied event; 0 before creation. This is the
    /// expected version to append new events at.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the order exists (its `OrderCreated` was applied).
    pub fn is_created(&self) -> bool {
        self.details.is_some()
    }

    /// The order's id, once created.
    pub fn id(&self) -> Option<OrderId> {
        self.details.as_ref().map(|d| d.id)
    }

    /// The order's status, once created.
    pub fn status(&self) -> Option<OrderStatus> {
        self.details.as_ref().map(|d| d.status)
    }

    /// Who ordered, once created.
    pub fn user_id(&self) -> Option<&UserId> {
        self.details.as_ref().map(|d| &d.user_id)
    }

    /// The order's currency, once created.
    pub fn currency(&self) -> Option<Currency> {
        self.details.as_ref().map(|d| d.currency)
    }

    /// The lines; empty before creation.
    pub fn items(&self) -> &[LineItem] {
        self.details.as_ref().map_or(&[], |d| &d.items)
    }

    /// The total of the lines, once created.
    pub fn total(&self) -> Option<Money> {
        self.details.as_ref().map(|d| Money::new(d.total_minor, d.currency))
    }

    /// When the order was created.
    pub fn created_at(&self) -> Option<DateTime<Utc>> {
        self.details.as_ref().map(|d| d.created_at)
    }

    /// When the last event happened.
    pub fn updated_at(&self) -> Option<DateTime<Utc>> {
        self.details.as_ref().map(|d| d.updated_at)
    }

    /// The payment, once paid (kept after a cancellation).
    pub fn payment(&self) -> Option<&Payment> {
        self.details.as_ref().and_then(|d| d.payment.as_ref())
    }

    /// The shipment, once shipped.
    pub fn shipment(&self) -> Option<&Shipment> {
        self.details.as_ref().and_then(|d| d.shipment.as_ref())
    }

    /// The cancellation, once cancelled.
    pub fn cancellation(&self) -> Option<&Cancellation> {
        self.details.as_ref().and_then(|d| d.cancellation.as_ref())
    }

    // ---- internals ------------------------------------------------------

    pub(crate) fn from_parts(version: u64, details: Option<Details>) -> Self {
        Self { version, details }
    }

    pub(crate) fn details(&self) -> Option<&Details> {
        self.details.as_ref()
    }

    fn next_event(
        &self,
        order_id: OrderId,
        occurred_at: DateTime<Utc>,
        payload: OrderEventPayload,
    ) -> OrderEvent {
        OrderEvent { order_id, version: self.version + 1, occurred_at, payload }
    }

    fn check_create(&self) -> Result<(), OrderError> {
        match &self.details {
            Some(details) => Err(OrderError::AlreadyCreated { id: details.id }),
            None => Ok(()),
        }
    }

    fn existing(&self) -> Result<&Details, OrderError> {
        self.details.as_ref().ok_or(OrderError::NotCreated)
    }

    fn existing_mut(&mut self) -> Result<&mut Details, OrderError> {
        self.details.as_mut().ok_or(OrderError::NotCreated)
    }

    fn pending_details_for_payment(
        &mut self,
        amount_minor: i64,
        currency: Option<Currency>,
    ) -> Result<&mut Details, OrderError> {
        let details = self.existing_mut()?;
        check_payment(details, amount_minor, currency)?;
        Ok(details)
    }

    fn details_for_shipment(&mut self) -> Result<&mut Details, OrderError> {
        let details = self.existing_mut()?;
        check_shipment(details)?;
        Ok(details)
    }

    fn details_for_cancel(&mut self) -> Result<&mut Details, OrderError> {
        let details = self.existing_mut()?;
        check_cancel(details)?;
        Ok(details)
    }
}

fn check_payment(details: &Details, amount_minor: i64, currency: Option<Currency>) -> Result<(), OrderError> {
    if details.status != OrderStatus::Pending {
        return Err(OrderError::NotPayable { status: details.status });
    }
    if let Some(got) = currency
        && got != details.currency
    {
        return Err(OrderError::CurrencyMismatch { expected: details.currency, got });
    }
    if amount_minor != details.total_minor {
        return Err(OrderError::AmountMismatch { expected: details.total_minor, got: amount_minor });
    }
    Ok(())
}

fn check_shipment(details: &Details) -> Result<(), OrderError> {
    match details.status {
        OrderStatus::Paid => Ok(()),
        status => Err(OrderError::NotShippable { status }),
    }
}

fn check_cancel(details: &Details) -> Result<(), OrderError> {
    match details.status {
        OrderStatus::Pending | OrderStatus::Paid => Ok(()),
        status => Err(OrderError::NotCancellable { status }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::error::{ErrorKind, Field, FieldError};
    use crate::values::Sku;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_750_000_000 + secs, 0).unwrap()
    }

    fn id() -> OrderId {
        OrderId::from_uuid(uuid::Uuid::from_u128(0x0190_b7e0_0000_7000_8000_0000_0000_0001))
    }

    fn eur() -> Currency {
        Currency::new("EUR").unwrap()
    }

    fn create_cmd() -> CreateOrder {
        CreateOrder::new(
            UserId::new("alice").unwrap(),
            eur(),
            vec![
                LineItem::new(Sku::new("book").unwrap(), 2, 1250),
                LineItem::new(Sku::new("pen").unwrap(), 1, 99),
            ],
        )
        .unwrap()
    }

    fn pay_cmd(amount_minor: i64) -> PayOrder {
        PayOrder::new(PaymentId::new("pay-1").unwrap(), amount_minor, None).unwrap()
    }

    fn ship_cmd() -> ShipOrder {
        ShipOrder::new(ShipmentId::new("ship-1").unwrap(), TrackingNumber::new("TRK1").unwrap())
    }

    fn cancel_cmd() -> CancelOrder {
        CancelOrder::new(CancelReason::new("changed my mind").unwrap())
    }

    /// Applies the events a command returned, checking their versions.
    fn run(order: &mut Order, command: impl FnOnce(&Order) -> Result<Vec<OrderEvent>, OrderError>) {
        let events = command(order).unwrap();
        for event in &events {
            assert_eq!(event.version, order.version() + 1);
            order.apply(event).unwrap();
        }
    }

    fn pending() -> Order {
        let mut order = Order::default();
        run(&mut order, |o| o.create(id(), create_cmd(), t(0)));
        order
    }

    fn paid() -> Order {
        let mut order = pending();
        run(&mut order, |o| o.pay(pay_cmd(2599), t(1)));
        order
    }

    fn shipped() -> Order {
        let mut order = paid();
        run(&mut order, |o| o.ship(ship_cmd(), t(2)));
        order
    }

    fn cancelled() -> Order {
        let mut order = pending();
        run(&mut order, |o| o.cancel(cancel_cmd(), t(1)));
        order
    }

    #[test]
    fn the_happy_path() {
        let order = Order::default();
        assert_eq!(order.version(), 0);
        assert_eq!(order.status(), None);
        assert!(order.items().is_empty());

        let order = pending();
        assert_eq!(order.version(), 1);
        assert_eq!(order.status(), Some(OrderStatus::Pending));
        assert_eq!(order.id(), Some(id()));
        assert_eq!(order.total(), Some(Money::new(2599, eur())));
        assert_eq!(order.user_id().unwrap().as_str(), "alice");
        assert_eq!(order.created_at(), Some(t(0)));

        let order = shipped();
        assert_eq!(order.version(), 3);
        assert_eq!(order.status(), Some(OrderStatus::Shipped));
        assert_eq!(order.payment().unwrap().amount_minor, 2599);
        assert_eq!(order.shipment().unwrap().tracking_number.as_str(), "TRK1");
        assert_eq!(order.updated_at(), Some(t(2)));
        assert_eq!(order.created_at(), Some(t(0)));

        let order = cancelled();
        assert_eq!(order.status(), Some(OrderStatus::Cancelled));
        assert_eq!(order.cancellation().unwrap().reason.as_str(), "changed my mind");
    }

    #[test]
    fn a_paid_order_can_be_cancelled() {
        let mut order = paid();
        run(&mut order, |o| o.cancel(cancel_cmd(), t(5)));
        assert_eq!(order.status(), Some(OrderStatus::Cancelled));
        assert_eq!(order.version(), 3);
        assert!(order.payment().is_some());
    }

    #[test]
    fn paying_in_the_named_currency_is_accepted() {
        let order = pending();
        let cmd = PayOrder::new(PaymentId::new("p").unwrap(), 2599, Some(eur())).unwrap();
        assert!(order.pay(cmd, t(1)).is_ok());
    }

    #[test]
    fn create_only_once() {
        let err = pending().create(id(), create_cmd(), t(1)).unwrap_err();
        assert_eq!(err, OrderError::AlreadyCreated { id: id() });
        assert_eq!(err.kind(), ErrorKind::Conflict);
    }

    #[test]
    fn commands_need_an_existing_order() {
        let order = Order::default();
        assert_eq!(order.pay(pay_cmd(1), t(0)), Err(OrderError::NotCreated));
        assert_eq!(order.ship(ship_cmd(), t(0)), Err(OrderError::NotCreated));
        assert_eq!(order.cancel(cancel_cmd(), t(0)), Err(OrderError::NotCreated));
        assert_eq!(OrderError::NotCreated.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn pay_only_when_pending() {
        for (order, status) in [
            (paid(), OrderStatus::Paid),
            (shipped(), OrderStatus::Shipped),
            (cancelled(), OrderStatus::Cancelled),
        ] {
            assert_eq!(order.pay(pay_cmd(2599), t(9)), Err(OrderError::NotPayable { status }));
        }
    }

    #[test]
    fn pay_only_the_exact_total() {
        for amount in [0, 2598, 2600] {
            let err = pending().pay(pay_cmd(amount), t(1)).unwrap_err();
            assert_eq!(err, OrderError::AmountMismatch { expected: 2599, got: amount });
            assert_eq!(err.kind(), ErrorKind::Conflict);
            assert_eq!(err.field(), Some(Field::AmountMinor));
        }
    }

    #[test]
    fn pay_only_in_the_order_currency() {
        let usd = Currency::new("USD").unwrap();
        let cmd = PayOrder::new(PaymentId::new("p").unwrap(), 2599, Some(usd)).unwrap();
        assert_eq!(pending().pay(cmd, t(1)), Err(OrderError::CurrencyMismatch { expected: eur(), got: usd }));
    }

    #[test]
    fn ship_only_when_paid() {
        for (order, status) in [
            (pending(), OrderStatus::Pending),
            (shipped(), OrderStatus::Shipped),
            (cancelled(), OrderStatus::Cancelled),
        ] {
            assert_eq!(order.ship(ship_cmd(), t(9)), Err(OrderError::NotShippable { status }));
        }
    }

    #[test]
    fn cancel_unless_shipped_or_cancelled() {
        for (order, status) in [(shipped(), OrderStatus::Shipped), (cancelled(), OrderStatus::Cancelled)] {
            assert_eq!(order.cancel(cancel_cmd(), t(9)), Err(OrderError::NotCancellable { status }));
        }
    }

    #[test]
    fn error_kinds() {
        let input = [
            OrderError::invalid(Field::UserId, FieldError::Empty),
            OrderError::NoItems,
            OrderError::TooManyItems { count: 101, max: 100 },
            OrderError::TotalOverflow,
        ];
        for err in input {
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        }
        let conflicts = [
            OrderError::AlreadyCreated { id: id() },
            OrderError::NotPayable { status: OrderStatus::Paid },
            OrderError::CurrencyMismatch { expected: eur(), got: eur() },
            OrderError::AmountMismatch { expected: 1, got: 2 },
            OrderError::NotShippable { status: OrderStatus::Pending },
            OrderError::NotCancellable { status: OrderStatus::Shipped },
        ];
        for err in conflicts {
            assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            OrderError::NotPayable { status: OrderStatus::Shipped }.to_string(),
            "only a pending order can be paid; this one is shipped"
        );
        assert_eq!(
            OrderError::NotCancellable { status: OrderStatus::Cancelled }.to_string(),
            "a cancelled order cannot be cancelled"
        );
    }

    // ---- replay ---------------------------------------------------------

    fn history() -> Vec<OrderEvent> {
        let mut order = Order::default();
        let mut all = Vec::new();
        for step in 0..3 {
            let events = match step {
                0 => order.create(id(), create_cmd(), t(0)),
                1 => order.pay(pay_cmd(2599), t(1)),
                _ => order.ship(ship_cmd(), t(2)),
            }
            .unwrap();
            for e in &events {
                order.apply(e).unwrap();
            }
            all.extend(events);
        }
        all
    }

    #[test]
    fn from_events_rebuilds_the_state() {
        let events = history();
        assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(Order::from_events(&events).unwrap(), shipped());
        assert_eq!(Order::from_events(&[]).unwrap(), Order::default());
    }

    #[test]
    fn replay_refuses_a_version_gap() {
        let events = history();
        let gap = [events[0].clone(), events[2].clone()];
        assert_eq!(Order::from_events(&gap), Err(ReplayError::VersionGap { expected: 2, found: 3 }));
        assert_eq!(Order::from_events(&events[1..]), Err(ReplayError::VersionGap { expected: 1, found: 2 }));
    }

    #[test]
    fn replay_refuses_another_orders_event() {
        let mut events = history();
        let other = OrderId::from_uuid(uuid::Uuid::from_u128(2));
        events[1].order_id = other;
        assert_eq!(
            Order::from_events(&events),
            Err(ReplayError::OrderIdMismatch { version: 2, expected: id(), found: other })
        );
    }

    #[test]
    fn replay_refuses_an_event_that_breaks_a_rule() {
        let events = history();
        // Shipped right after created: not paid.
        let mut shipped_early = events[2].clone();
        shipped_early.version = 2;
        let mut order = pending();
        let before = order.clone();
        assert_eq!(
            order.apply(&shipped_early),
            Err(ReplayError::Rejected {
                version: 2,
                event_type: "OrderShipped",
                rule: OrderError::NotShippable { status: OrderStatus::Pending }
            })
        );
        assert_eq!(order, before, "a refused event leaves the state untouched");

        // Created twice.
        let mut again = events[0].clone();
        again.version = 2;
        assert!(matches!(
            order.apply(&again),
            Err(ReplayError::Rejected { rule: OrderError::AlreadyCreated { .. }, .. })
        ));

        // Paid with the wrong amount.
        let mut wrong = events[1].clone();
        if let OrderEventPayload::Paid { amount_minor, .. } = &mut wrong.payload {
            *amount_minor = 1;
        }
        assert_eq!(
            order.apply(&wrong),
            Err(ReplayError::Rejected {
                version: 2,
                event_type: "OrderPaid",
                rule: OrderError::AmountMismatch { expected: 2599, got: 1 }
            })
        );
        assert_eq!(order, before);

        // Paid before created.
        let mut early = events[1].clone();
        early.version = 1;
        assert_eq!(
            Order::from_events([&early]),
            Err(ReplayError::Rejected { version: 1, event_type: "OrderPaid", rule: OrderError::NotCreated })
        );
    }

    #[test]
    fn replay_refuses_a_created_event_with_a_wrong_total() {
        let mut created = history().remove(0);
        if let OrderEventPayload::Created { total_minor, .. } = &mut created.payload {
            *total_minor = 7;
        }
        assert_eq!(
            Order::from_events([&created]),
            Err(ReplayError::TotalMismatch { version: 1, expected: 2599, found: 7 })
        );
        if let OrderEventPayload::Created { items, .. } = &mut created.payload {
            items.clear();
        }
        assert_eq!(
            Order::from_events([&created]),
            Err(ReplayError::Rejected { version: 1, event_type: "OrderCreated", rule: OrderError::NoItems })
        );
    }

    #[test]
    fn events_serialize_as_tagged_json() {
        let events = history();
        let json = serde_json::to_value(&events[2]).unwrap();
        assert_eq!(json["payload"]["type"], "OrderShipped");
        assert_eq!(json["payload"]["tracking_number"], "TRK1");
        let back: Vec<OrderEvent> = serde_json::from_str(&serde_json::to_string(&events).unwrap()).unwrap();
        assert_eq!(back, events);
        assert_eq!(events[0].payload.money(), Some(Money::new(2599, eur())));
    }
}
