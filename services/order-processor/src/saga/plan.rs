//! What a group of saga steps does, decided in memory.
//!
//! A group's transaction first reads (and locks) what its steps decide on: which of
//! their events are new to the inbox, the available stock of every tracked SKU they
//! may change, and the lines each of their orders holds reserved ([`State`]). Then each
//! step, in the group's order, changes that state and adds its rows to the group's
//! [`Writes`], which the transaction writes with one set-based statement per table. A
//! step sees what the steps before it did: a release frees stock for a later
//! reservation of the same group, and two orders never reserve the same units.
//!
//! Everything here is pure; `saga` does the reading and the writing.

use std::collections::{BTreeMap, HashMap, HashSet};

use orders_consumer::Failure;
use orders_domain::{
    CancelOrder, CancelReason, LineItem, OrderEvent, OrderEventPayload, ShipOrder, ShipmentId, TrackingNumber,
};
use orders_events::OrderCommand;
use uuid::Uuid;

/// What a group's transaction read before its steps.
#[derive(Debug, Default)]
pub(super) struct State {
    /// The events' ids the transaction claimed in the inbox: new, so to apply. A step
    /// takes its id out; a second step with the same id finds it gone.
    pub(super) claimed: HashSet<String>,
    /// The available units of every tracked SKU the steps may change (locked).
    pub(super) available: BTreeMap<String, i64>,
    /// The lines still reserved by each of the steps' orders, in SKU order (locked).
    pub(super) reserved: HashMap<Uuid, Vec<(String, i64)>>,
}

/// How a step changes one SKU's stock.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct StockChange {
    pub(super) available: i64,
    pub(super) reserved: i64,
    pub(super) shipped: i64,
}

/// The rows a group writes, gathered from its steps.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Writes {
    /// Per SKU, the sum of the steps' changes.
    pub(super) stock: BTreeMap<String, StockChange>,
    /// New reservations: order, SKU, quantity.
    pub(super) reservations: Vec<(Uuid, String, i64)>,
    /// Reservations leaving `reserved`: order, SKU, `shipped` or `released`.
    pub(super) settled: Vec<(Uuid, String, &'static str)>,
    /// New shipments: order, shipment id, tracking number.
    pub(super) shipments: Vec<(Uuid, String, String)>,
    /// What the saga last did for each order: order, outcome, detail.
    pub(super) outcomes: Vec<(Uuid, &'static str, String)>,
}

/// What one event made the saga do: the commands to send, and the outcome to count
/// (none for an order that is not this warehouse's, or an event handled before).
#[derive(Debug, PartialEq)]
pub(super) struct Step {
    pub(super) commands: Vec<OrderCommand>,
    pub(super) outcome: Option<&'static str>,
}

impl Step {
    const NONE: Self = Self { commands: Vec::new(), outcome: None };
}

impl State {
    /// The step of `event` (id `event_id`), its rows added to `writes`.
    pub(super) fn step(
        &mut self,
        event_id: &str,
        event: &OrderEvent,
        writes: &mut Writes,
    ) -> Result<Step, Failure> {
        if !self.claimed.remove(event_id) {
            return Ok(Step::NONE); // handled before: its effect and commands are there
        }
        let order = event.order_id.as_uuid();
        match &event.payload {
            OrderEventPayload::Created { items, .. } => self.reserve(order, items, writes),
            OrderEventPayload::Paid { .. } => self.ship(order, writes),
            OrderEventPayload::Shipped { .. } => Ok(self.settle(order, "shipped", writes)),
            OrderEventPayload::Cancelled { .. } => Ok(self.settle(order, "released", writes)),
        }
    }

    /// `OrderCreated`: reserves every tracked line, or none and answers `CancelOrder`.
    fn reserve(&mut self, order: Uuid, items: &[LineItem], writes: &mut Writes) -> Result<Step, Failure> {
        let mut wanted: BTreeMap<&str, i64> = BTreeMap::new();
        for item in items {
            *wanted.entry(item.sku.as_str()).or_default() += i64::from(item.quantity);
        }
        let tracked: Vec<(&str, i64, i64)> = wanted
            .iter()
            .filter_map(|(sku, want)| self.available.get(*sku).map(|available| (*sku, *want, *available)))
            .collect();
        if tracked.is_empty() {
            return Ok(Step::NONE); // not this warehouse's order
        }
        let short: Vec<String> = tracked
            .iter()
            .filter(|(_, want, available)| want > available)
            .map(|(sku, want, available)| format!("{sku} (wanted {want}, available {available})"))
            .collect();
        if !short.is_empty() {
            let reason = format!("out of stock: {}", short.join(", "));
            let command = CancelOrder::new(
                CancelReason::new(truncate(&reason, CancelReason::MAX_LEN)).map_err(Failure::permanent)?,
            );
            writes.outcomes.push((order, "cancel requested", reason));
            return Ok(Step { commands: vec![OrderCommand::Cancel(command)], outcome: Some("out_of_stock") });
        }
        for &(sku, want, _) in &tracked {
            if let Some(available) = self.available.get_mut(sku) {
                *available -= want;
            }
            let change = writes.stock.entry(sku.to_string()).or_default();
            change.available -= want;
            change.reserved += want;
            writes.reservations.push((order, sku.to_string(), want));
        }
        let detail = tracked.iter().map(|(sku, _, _)| *sku).collect::<Vec<_>>().join(", ");
        writes.outcomes.push((order, "reserved", detail));
        Ok(Step { commands: Vec::new(), outcome: Some("reserved") })
    }

    /// `OrderPaid`: creates the shipment of a reserved order and answers `ShipOrder`.
    fn ship(&mut self, order: Uuid, writes: &mut Writes) -> Result<Step, Failure> {
        if self.reserved.get(&order).is_none_or(Vec::is_empty) {
            return Ok(Step::NONE); // nothing of this warehouse to ship
        }
        // Random (v4), not time-ordered (v7): a v7 prefix repeats within a millisecond.
        let shipment_id = format!("SHP-{}", Uuid::new_v4().simple());
        let tracking = format!("TRK{}", Uuid::new_v4().simple().to_string()[..20].to_uppercase());
        let command = ShipOrder::new(
            ShipmentId::new(shipment_id.clone()).map_err(Failure::permanent)?,
            TrackingNumber::new(tracking.clone()).map_err(Failure::permanent)?,
        );
        writes.shipments.push((order, shipment_id.clone(), tracking));
        writes.outcomes.push((order, "shipment requested", shipment_id));
        Ok(Step { commands: vec![OrderCommand::Ship(command)], outcome: Some("shipment_requested") })
    }

    /// `OrderShipped` (`state` = `shipped`: the reserved units leave) or
    /// `OrderCancelled` (`released`: they are available again).
    fn settle(&mut self, order: Uuid, state: &'static str, writes: &mut Writes) -> Step {
        let lines = self.reserved.remove(&order).unwrap_or_default();
        if lines.is_empty() {
            return Step::NONE;
        }
        for (sku, quantity) in lines {
            let change = writes.stock.entry(sku.clone()).or_default();
            change.reserved -= quantity;
            if state == "shipped" {
                change.shipped += quantity;
            } else {
                change.available += quantity;
                if let Some(available) = self.available.get_mut(&sku) {
                    *available += quantity;
                }
            }
            writes.settled.push((order, sku, state));
        }
        writes.outcomes.push((order, state, String::new()));
        Step { commands: Vec::new(), outcome: Some(state) }
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use orders_domain::{CancelReason, Currency, OrderId, PaymentId, Sku, UserId};

    use super::*;

    fn event(order: Uuid, payload: OrderEventPayload) -> OrderEvent {
        OrderEvent { order_id: OrderId::from_uuid(order), version: 1, occurred_at: Utc::now(), payload }
    }

    fn created(order: Uuid, lines: &[(&str, u32)]) -> OrderEvent {
        let items: Vec<LineItem> = lines
            .iter()
            .map(|(sku, quantity)| LineItem::new(Sku::new(*sku).expect("sku"), *quantity, 100))
            .collect();
        let payload = OrderEventPayload::Created {
            user_id: UserId::new("alice").expect("user"),
            currency: Currency::new("EUR").expect("currency"),
            total_minor: items.iter().map(|i| i64::from(i.quantity) * i.unit_price_minor).sum(),
            items,
        };
        event(order, payload)
    }

    fn cancelled(order: Uuid) -> OrderEvent {
        event(
            order,
            OrderEventPayload::Cancelled { reason: CancelReason::new("changed mind").expect("reason") },
        )
    }

    fn paid(order: Uuid) -> OrderEvent {
        let payload = OrderEventPayload::Paid {
            payment_id: PaymentId::new("pay-1").expect("payment"),
            amount_minor: 100,
            currency: Currency::new("EUR").expect("currency"),
        };
        event(order, payload)
    }

    fn state(claimed: &[&str], available: &[(&str, i64)]) -> State {
        State {
            claimed: claimed.iter().map(|id| id.to_string()).collect(),
            available: available.iter().map(|(sku, n)| (sku.to_string(), *n)).collect(),
            reserved: HashMap::new(),
        }
    }

    #[test]
    fn two_orders_of_a_group_never_reserve_the_same_units() {
        let (first, second) = (Uuid::now_v7(), Uuid::now_v7());
        let mut state = state(&["e1", "e2"], &[("A", 3)]);
        let mut writes = Writes::default();
        let one =
            state.step("e1", &created(first, &[("A", 2), ("ELSEWHERE", 9)]), &mut writes).expect("step");
        assert_eq!(one.outcome, Some("reserved"));
        let two = state.step("e2", &created(second, &[("A", 2)]), &mut writes).expect("step");
        assert_eq!(two.outcome, Some("out_of_stock"));
        let [OrderCommand::Cancel(cancel)] = two.commands.as_slice() else { panic!("{two:?}") };
        assert_eq!(cancel.reason.as_str(), "out of stock: A (wanted 2, available 1)");
        assert_eq!(writes.stock["A"], StockChange { available: -2, reserved: 2, shipped: 0 });
        assert_eq!(writes.reservations, vec![(first, "A".to_string(), 2)]);
        assert_eq!(
            writes.outcomes,
            vec![
                (first, "reserved", "A".to_string()),
                (second, "cancel requested", "out of stock: A (wanted 2, available 1)".to_string())
            ]
        );
    }

    #[test]
    fn a_release_frees_stock_for_a_later_step_of_its_group() {
        let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
        let mut state = state(&["cancel", "create"], &[("A", 0)]);
        state.reserved.insert(old, vec![("A".to_string(), 2)]);
        let mut writes = Writes::default();
        assert_eq!(
            state.step("cancel", &cancelled(old), &mut writes).expect("step").outcome,
            Some("released")
        );
        assert_eq!(
            state.step("create", &created(new, &[("A", 2)]), &mut writes).expect("step").outcome,
            Some("reserved")
        );
        assert_eq!(
            writes.stock["A"],
            StockChange { available: 0, reserved: 0, shipped: 0 },
            "released, then reserved"
        );
        assert_eq!(writes.settled, vec![(old, "A".to_string(), "released")]);
        assert_eq!(writes.reservations, vec![(new, "A".to_string(), 2)]);
    }

    #[test]
    fn an_event_handled_before_or_twice_in_a_group_does_nothing_more() {
        let order = Uuid::now_v7();
        let mut state = state(&["new"], &[("A", 5)]);
        let mut writes = Writes::default();
        let event = created(order, &[("A", 1)]);
        assert_eq!(state.step("old", &event, &mut writes).expect("step"), Step::NONE, "not claimed now");
        assert_eq!(state.step("new", &event, &mut writes).expect("step").outcome, Some("reserved"));
        assert_eq!(state.step("new", &event, &mut writes).expect("step"), Step::NONE, "claimed once");
        assert_eq!(writes.reservations.len(), 1);
        assert_eq!(writes.stock["A"].available, -1);
    }

    #[test]
    fn payment_ships_only_a_reserved_order_and_shipping_moves_its_units() {
        let (reserved, elsewhere) = (Uuid::now_v7(), Uuid::now_v7());
        let mut state = state(&["p1", "p2", "s1"], &[("A", 5)]);
        state.reserved.insert(reserved, vec![("A".to_string(), 2)]);
        let mut writes = Writes::default();
        let ship = state.step("p1", &paid(reserved), &mut writes).expect("step");
        let [OrderCommand::Ship(command)] = ship.commands.as_slice() else { panic!("{ship:?}") };
        assert_eq!(
            writes.shipments,
            vec![(
                reserved,
                command.shipment_id.as_str().to_string(),
                command.tracking_number.as_str().to_string()
            )]
        );
        assert_eq!(state.step("p2", &paid(elsewhere), &mut writes).expect("step"), Step::NONE);
        let shipped = event(
            reserved,
            OrderEventPayload::Shipped {
                shipment_id: command.shipment_id.clone(),
                tracking_number: command.tracking_number.clone(),
            },
        );
        assert_eq!(state.step("s1", &shipped, &mut writes).expect("step").outcome, Some("shipped"));
        assert_eq!(writes.stock["A"], StockChange { available: 0, reserved: -2, shipped: 2 });
        assert_eq!(writes.settled, vec![(reserved, "A".to_string(), "shipped")]);
    }

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary() {
        assert_eq!(truncate("ééé", 3), "é");
        assert_eq!(truncate("abc", 5), "abc");
    }
}
