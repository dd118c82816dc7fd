//! Property tests of the aggregate over random command sequences.
//!
//! Each case is a sequence of raw command inputs, some valid, some not. They
//! are parsed and run against the aggregate, and compared step by step with a
//! small independent model of the rules (totals computed in `i128`):
//! - a command is accepted exactly when the model says it should be, and a
//!   refused one has the kind of error the model expects;
//! - accepted commands produce the next versions, without gaps;
//! - applying the events of a command to the state before it gives the
//!   state after it, and a refused command leaves the state untouched;
//! - `from_events(all events)` is the final state, and so is a snapshot at
//!   any step plus the events after it.
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, TimeZone, Utc};
use orders_domain::{
    CancelOrder, CancelOrderInput, CreateOrder, CreateOrderInput, ErrorKind, LineItemInput, MAX_ITEMS, Order,
    OrderError, OrderEvent, OrderId, OrderSnapshot, OrderStatus, PayOrder, PayOrderInput, ShipOrder,
    ShipOrderInput,
};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Amount {
    /// The order's current total (or 0 before creation).
    Exact,
    /// The total plus an offset.
    Off(i64),
    /// Any number.
    Raw(i64),
}

#[derive(Debug, Clone)]
enum Step {
    Create(CreateOrderInput),
    Pay { payment_id: String, amount: Amount, currency: Option<String> },
    Ship(ShipOrderInput),
    Cancel(CancelOrderInput),
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        16 => "[a-zA-Z0-9-]{1,24}",
        1 => Just(String::new()),
        1 => Just("  ".to_owned()),
        1 => "[a-z]{65,70}",
        1 => Just("bad\nvalue".to_owned()),
    ]
}

fn currency() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("EUR".to_owned()),
        2 => Just("USD".to_owned()),
        1 => Just("eur".to_owned()),
        1 => Just("EURO".to_owned()),
    ]
}

fn item() -> impl Strategy<Value = LineItemInput> {
    let quantity = prop_oneof![
        8 => 1i64..5,
        1 => -2i64..=0,
        1 => Just(i64::from(u32::MAX) + 1),
        1 => Just(i64::from(u32::MAX)),
    ];
    let price = prop_oneof![
        8 => 0i64..10_000,
        1 => -5i64..0,
        1 => (i64::MAX / 4)..=i64::MAX,
    ];
    (text(), quantity, price).prop_map(|(sku, quantity, unit_price_minor)| LineItemInput {
        sku,
        quantity,
        unit_price_minor,
    })
}

fn create_input() -> impl Strategy<Value = CreateOrderInput> {
    let items = prop_oneof![
        20 => prop::collection::vec(item(), 1..4),
        1 => Just(Vec::new()),
        1 => prop::collection::vec(item(), MAX_ITEMS + 1..=MAX_ITEMS + 1),
    ];
    (text(), currency(), items).prop_map(|(user_id, currency, items)| CreateOrderInput {
        user_id,
        currency,
        items,
    })
}

fn valid_create_input() -> impl Strategy<Value = CreateOrderInput> {
    let item = ("[a-z]{1,8}", 1i64..5, 0i64..10_000)
        .prop_map(|(sku, quantity, unit_price_minor)| LineItemInput { sku, quantity, unit_price_minor });
    ("[a-z]{1,8}", prop_oneof![Just("EUR"), Just("USD")], prop::collection::vec(item, 1..4)).prop_map(
        |(user_id, currency, items)| CreateOrderInput { user_id, currency: currency.to_owned(), items },
    )
}

fn step() -> impl Strategy<Value = Step> {
    let amount = prop_oneof![
        6 => Just(Amount::Exact),
        1 => (-3i64..=3).prop_map(Amount::Off),
        1 => any::<i64>().prop_map(Amount::Raw),
    ];
    let pay_currency = prop_oneof![
        4 => Just(None),
        2 => Just(Some("EUR".to_owned())),
        1 => Just(Some("USD".to_owned())),
        1 => Just(Some("usd".to_owned())),
    ];
    prop_oneof![
        2 => create_input().prop_map(Step::Create),
        3 => (text(), amount, pay_currency).prop_map(|(payment_id, amount, currency)| Step::Pay {
            payment_id,
            amount,
            currency
        }),
        2 => (text(), text()).prop_map(|(shipment_id, tracking_number)| Step::Ship(
            ShipOrderInput {
                shipment_id,
                tracking_number
            }
        )),
        2 => text().prop_map(|reason| Step::Cancel(CancelOrderInput { reason })),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    // Most sequences start with a create, so that later steps have an order.
    let first = prop_oneof![
        6 => valid_create_input().prop_map(Some),
        2 => create_input().prop_map(Some),
        1 => Just(None),
    ];
    (first, prop::collection::vec(step(), 0..12)).prop_map(|(first, mut rest)| {
        if let Some(first) = first {
            rest.insert(0, Step::Create(first));
        }
        rest
    })
}

// ---- the model ----------------------------------------------------------

#[derive(Debug, Clone, Default)]
struct Model {
    created: Option<(OrderStatus, i128, String)>,
    version: u64,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Accepted(OrderStatus),
    Refused(ErrorKind),
}

fn text_ok(s: &str, max: usize) -> bool {
    !s.trim().is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
}

fn currency_ok(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

impl Model {
    fn total(&self) -> i64 {
        self.created.as_ref().map_or(0, |(_, total, _)| i64::try_from(*total).unwrap())
    }

    fn expect(&self, step: &Step, amount_minor: i64) -> Outcome {
        use Outcome::{Accepted, Refused};
        match step {
            Step::Create(input) => {
                let items_ok = !input.items.is_empty()
                    && input.items.len() <= MAX_ITEMS
                    && input.items.iter().all(|i| {
                        text_ok(&i.sku, 64)
                            && i.quantity > 0
                            && i.quantity <= i64::from(u32::MAX)
                            && i.unit_price_minor >= 0
                    });
                let total: i128 =
                    input.items.iter().map(|i| i128::from(i.quantity) * i128::from(i.unit_price_minor)).sum();
                if !text_ok(&input.user_id, 64)
                    || !currency_ok(&input.currency)
                    || !items_ok
                    || total > i128::from(i64::MAX)
                {
                    Refused(ErrorKind::InvalidInput)
                } else if self.created.is_some() {
                    Refused(ErrorKind::Conflict)
                } else {
                    Accepted(OrderStatus::Pending)
                }
            }
            Step::Pay { payment_id, currency, .. } => {
                let currency_input_ok = currency.as_deref().is_none_or(currency_ok);
                if !text_ok(payment_id, 64) || amount_minor < 0 || !currency_input_ok {
                    return Refused(ErrorKind::InvalidInput);
                }
                match &self.created {
                    None => Refused(ErrorKind::NotFound),
                    Some((OrderStatus::Pending, total, order_currency))
                        if i128::from(amount_minor) == *total
                            && currency.as_ref().is_none_or(|c| c == order_currency) =>
                    {
                        Accepted(OrderStatus::Paid)
                    }
                    Some(_) => Refused(ErrorKind::Conflict),
                }
            }
            Step::Ship(input) => {
                if !text_ok(&input.shipment_id, 64) || !text_ok(&input.tracking_number, 64) {
                    return Refused(ErrorKind::InvalidInput);
                }
                match &self.created {
                    None => Refused(ErrorKind::NotFound),
                    Some((OrderStatus::Paid, ..)) => Accepted(OrderStatus::Shipped),
                    Some(_) => Refused(ErrorKind::Conflict),
                }
            }
            Step::Cancel(input) => {
                if !text_ok(&input.reason, 500) {
                    return Refused(ErrorKind::InvalidInput);
                }
                match &self.created {
                    None => Refused(ErrorKind::NotFound),
                    Some((OrderStatus::Pending | OrderStatus::Paid, ..)) => Accepted(OrderStatus::Cancelled),
                    Some(_) => Refused(ErrorKind::Conflict),
                }
            }
        }
    }

    fn accept(&mut self, step: &Step, status: OrderStatus) {
        self.version += 1;
        match (&mut self.created, step) {
            (None, Step::Create(input)) => {
                let total =
                    input.items.iter().map(|i| i128::from(i.quantity) * i128::from(i.unit_price_minor)).sum();
                self.created = Some((status, total, input.currency.clone()));
            }
            (Some((current, ..)), _) => *current = status,
            (None, _) => unreachable!("only a create is accepted before creation"),
        }
    }
}

// ---- running a step -----------------------------------------------------

fn order_id() -> OrderId {
    OrderId::from_uuid(uuid::Uuid::from_u128(0x0190_b7e0_0000_7000_8000_0000_0000_00aa))
}

fn at(step: usize) -> DateTime<Utc> {
    Utc.timestamp_opt(1_750_000_000, 0).unwrap() + chrono::Duration::seconds(step as i64)
}

fn amount_of(model: &Model, step: &Step) -> i64 {
    match step {
        Step::Pay { amount, .. } => match amount {
            Amount::Exact => model.total(),
            Amount::Off(off) => model.total().saturating_add(*off),
            Amount::Raw(n) => *n,
        },
        _ => 0,
    }
}

fn run(
    order: &Order,
    step: &Step,
    amount_minor: i64,
    now: DateTime<Utc>,
) -> Result<Vec<OrderEvent>, OrderError> {
    match step.clone() {
        Step::Create(input) => order.create(order_id(), CreateOrder::try_from(input)?, now),
        Step::Pay { payment_id, currency, .. } => {
            order.pay(PayOrder::try_from(PayOrderInput { payment_id, amount_minor, currency })?, now)
        }
        Step::Ship(input) => order.ship(ShipOrder::try_from(input)?, now),
        Step::Cancel(input) => order.cancel(CancelOrder::try_from(input)?, now),
    }
}

fn check_invariants(order: &Order) -> Result<(), TestCaseError> {
    let Some(status) = order.status() else {
        prop_assert_eq!(order.version(), 0);
        return Ok(());
    };
    let total = order.total().unwrap();
    let sum: i128 =
        order.items().iter().map(|i| i128::from(i.quantity) * i128::from(i.unit_price_minor)).sum();
    prop_assert_eq!(i128::from(total.amount_minor), sum);
    prop_assert!(!order.items().is_empty() && order.items().len() <= MAX_ITEMS);
    prop_assert!(order.items().iter().all(|i| i.quantity > 0 && i.unit_price_minor >= 0));
    if let Some(payment) = order.payment() {
        prop_assert_eq!(payment.amount_minor, total.amount_minor);
    }
    match status {
        OrderStatus::Pending => prop_assert!(order.payment().is_none()),
        OrderStatus::Paid => prop_assert!(order.payment().is_some()),
        OrderStatus::Shipped => {
            prop_assert!(order.payment().is_some() && order.shipment().is_some());
        }
        OrderStatus::Cancelled => {
            prop_assert!(order.cancellation().is_some() && order.shipment().is_none());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn random_command_sequences_keep_the_rules(steps in steps(), cut in any::<prop::sample::Index>()) {
        let mut order = Order::default();
        let mut model = Model::default();
        let mut history: Vec<OrderEvent> = Vec::new();
        let mut snapshots = vec![(0usize, order.snapshot())];

        for (n, step) in steps.iter().enumerate() {
            let amount_minor = amount_of(&model, step);
            let expected = model.expect(step, amount_minor);
            let before = order.clone();
            match run(&order, step, amount_minor, at(n)) {
                Ok(events) => {
                    let Outcome::Accepted(status) = expected else {
                        return Err(TestCaseError::fail(format!("accepted {step:?}, model says {expected:?}")));
                    };
                    prop_assert_eq!(events.len(), 1);
                    for (k, event) in events.iter().enumerate() {
                        prop_assert_eq!(event.version, before.version() + 1 + k as u64);
                        prop_assert_eq!(event.order_id, order_id());
                        prop_assert_eq!(event.occurred_at, at(n));
                        order.apply(event).unwrap();
                    }
                    // Replaying a command's events from the state before it
                    // gives the state after it.
                    prop_assert_eq!(&before.clone().replay(&events).unwrap(), &order);
                    prop_assert_eq!(order.status(), Some(status));
                    model.accept(step, status);
                    history.extend(events);
                    snapshots.push((history.len(), order.snapshot()));
                }
                Err(err) => {
                    prop_assert_eq!(Outcome::Refused(err.kind()), expected, "{:?} refused with {}", step, err);
                    prop_assert_eq!(&order, &before);
                }
            }
            prop_assert_eq!(order.version(), model.version);
            check_invariants(&order)?;
        }

        // Versions are 1, 2, 3, ... without gaps.
        let versions: Vec<u64> = history.iter().map(|e| e.version).collect();
        prop_assert_eq!(versions, (1..=history.len() as u64).collect::<Vec<_>>());
        // The whole history rebuilds the state.
        prop_assert_eq!(&Order::from_events(&history).unwrap(), &order);
        // A snapshot at any step, through JSON, plus the later events too.
        let (seen, snapshot) = cut.get(&snapshots).clone();
        let json = serde_json::to_string(&snapshot).unwrap();
        let restored = Order::from_snapshot(serde_json::from_str::<OrderSnapshot>(&json).unwrap()).unwrap();
        prop_assert_eq!(&restored.replay(&history[seen..]).unwrap(), &order);
    }

    #[test]
    fn any_line_item_input_parses_or_names_the_field(input in create_input()) {
        // Never panics; an error always says what kind of thing is wrong.
        if let Err(err) = CreateOrder::try_from(input) {
            prop_assert_eq!(err.kind(), ErrorKind::InvalidInput);
            prop_assert!(!err.to_string().is_empty());
        }
    }
}
