//! Fixed examples of every message, and strategies for random ones.

use chrono::{DateTime, TimeZone, Utc};
use orders_domain::{
    CancelOrder, CancelReason, Currency, LineItem, OrderEvent, OrderEventPayload, OrderId, PayOrder,
    PaymentId, ShipOrder, ShipmentId, Sku, TrackingNumber, UserId, order_total,
};
use orders_events::{CommandMessage, CommandMetadata, EventMetadata, OrderCommand, UserWindowStats};
use proptest::prelude::*;
use uuid::Uuid;

pub(crate) fn uuid(n: u128) -> Uuid {
    Uuid::from_u128(0x0190_b7e0_1234_7000_8000_0000_0000_0000 | n)
}

pub(crate) fn at(secs: i64, nanos: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, nanos).unwrap()
}

pub(crate) fn eur() -> Currency {
    Currency::new("EUR").unwrap()
}

pub(crate) fn metadata() -> EventMetadata {
    EventMetadata { event_id: uuid(1), correlation_id: uuid(2), causation_id: Some(uuid(3)) }
}

pub(crate) fn order_id() -> OrderId {
    OrderId::from_uuid(uuid(4))
}

pub(crate) fn event(version: u64, payload: OrderEventPayload) -> OrderEvent {
    OrderEvent { order_id: order_id(), version, occurred_at: at(1_750_000_000, 123_000_000), payload }
}

pub(crate) fn created() -> OrderEvent {
    event(
        1,
        OrderEventPayload::Created {
            user_id: UserId::new("alice").unwrap(),
            currency: eur(),
            items: vec![
                LineItem::new(Sku::new("book").unwrap(), 2, 1250),
                LineItem::new(Sku::new("pen").unwrap(), 1, 99),
            ],
            total_minor: 2599,
        },
    )
}

pub(crate) fn paid() -> OrderEvent {
    event(
        2,
        OrderEventPayload::Paid {
            payment_id: PaymentId::new("pay-1").unwrap(),
            amount_minor: 2599,
            currency: eur(),
        },
    )
}

pub(crate) fn shipped() -> OrderEvent {
    event(
        3,
        OrderEventPayload::Shipped {
            shipment_id: ShipmentId::new("ship-1").unwrap(),
            tracking_number: TrackingNumber::new("TRK123").unwrap(),
        },
    )
}

pub(crate) fn cancelled() -> OrderEvent {
    event(2, OrderEventPayload::Cancelled { reason: CancelReason::new("out of stock").unwrap() })
}

pub(crate) fn events() -> [OrderEvent; 4] {
    [created(), paid(), shipped(), cancelled()]
}

pub(crate) fn command(expected_version: Option<u64>, command: OrderCommand) -> CommandMessage {
    CommandMessage {
        metadata: CommandMetadata {
            command_id: uuid(5),
            correlation_id: uuid(2),
            causation_id: Some(uuid(1)),
        },
        order_id: order_id(),
        expected_version,
        command,
    }
}

pub(crate) fn ship() -> CommandMessage {
    command(
        Some(2),
        OrderCommand::Ship(ShipOrder::new(
            ShipmentId::new("ship-1").unwrap(),
            TrackingNumber::new("TRK123").unwrap(),
        )),
    )
}

pub(crate) fn cancel() -> CommandMessage {
    command(None, OrderCommand::Cancel(CancelOrder::new(CancelReason::new("out of stock").unwrap())))
}

pub(crate) fn pay() -> CommandMessage {
    command(
        Some(1),
        OrderCommand::Pay(PayOrder::new(PaymentId::new("pay-1").unwrap(), 2599, Some(eur())).unwrap()),
    )
}

pub(crate) fn commands() -> [CommandMessage; 3] {
    [ship(), cancel(), pay()]
}

pub(crate) fn stats() -> UserWindowStats {
    UserWindowStats {
        user_id: UserId::new("alice").unwrap(),
        window_start: at(1_750_000_000, 0),
        window_end: at(1_750_000_060, 0),
        order_count: 3,
        paid_count: 2,
        revenue_minor: 5198,
        currency: eur(),
        is_final: true,
        cancelled_count: 1,
        refunded_minor: 1299,
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
}

// ---- strategies ---------------------------------------------------------

fn text_of(max: usize) -> impl Strategy<Value = String> {
    // Printable, non-blank, including multi-byte characters, up to `max`.
    prop::string::string_regex(&format!("[a-zA-Z0-9é€ -]{{0,{}}}[a-z]", max - 1)).unwrap()
}

fn any_uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    // Year 1 to year 9999, any nanosecond.
    (-62_135_596_800i64..253_402_300_799, 0u32..1_000_000_000).prop_map(|(s, n)| at(s, n))
}

fn any_currency() -> impl Strategy<Value = Currency> {
    "[A-Z]{3}".prop_map(|c| Currency::new(&c).unwrap())
}

pub(crate) fn any_metadata() -> impl Strategy<Value = EventMetadata> {
    (any_uuid(), any_uuid(), prop::option::of(any_uuid())).prop_map(
        |(event_id, correlation_id, causation_id)| EventMetadata { event_id, correlation_id, causation_id },
    )
}

fn any_payload() -> impl Strategy<Value = OrderEventPayload> {
    let item = (text_of(64), 1u32..=u32::MAX, 0i64..1_000_000)
        .prop_map(|(sku, q, p)| LineItem::new(Sku::new(sku).unwrap(), q, p));
    prop_oneof![
        (text_of(64), any_currency(), prop::collection::vec(item, 1..6)).prop_map(
            |(user, currency, items)| OrderEventPayload::Created {
                user_id: UserId::new(user).unwrap(),
                currency,
                total_minor: order_total(&items).unwrap(),
                items,
            }
        ),
        (text_of(64), 0i64..=i64::MAX, any_currency()).prop_map(|(id, amount_minor, currency)| {
            OrderEventPayload::Paid { payment_id: PaymentId::new(id).unwrap(), amount_minor, currency }
        }),
        (text_of(64), text_of(64)).prop_map(|(s, t)| OrderEventPayload::Shipped {
            shipment_id: ShipmentId::new(s).unwrap(),
            tracking_number: TrackingNumber::new(t).unwrap(),
        }),
        text_of(500).prop_map(|r| OrderEventPayload::Cancelled { reason: CancelReason::new(r).unwrap() }),
    ]
}

pub(crate) fn any_event() -> impl Strategy<Value = OrderEvent> {
    (any_uuid(), 1u64.., any_time(), any_payload()).prop_map(|(id, version, occurred_at, payload)| {
        OrderEvent { order_id: OrderId::from_uuid(id), version, occurred_at, payload }
    })
}

pub(crate) fn any_command() -> impl Strategy<Value = CommandMessage> {
    let cmd = prop_oneof![
        (text_of(64), text_of(64)).prop_map(|(s, t)| OrderCommand::Ship(ShipOrder::new(
            ShipmentId::new(s).unwrap(),
            TrackingNumber::new(t).unwrap()
        ))),
        text_of(500).prop_map(|r| OrderCommand::Cancel(CancelOrder::new(CancelReason::new(r).unwrap()))),
        (text_of(64), 0i64..=i64::MAX, prop::option::of(any_currency())).prop_map(|(p, a, c)| {
            OrderCommand::Pay(PayOrder::new(PaymentId::new(p).unwrap(), a, c).unwrap())
        }),
    ];
    (any_uuid(), any_uuid(), prop::option::of(any_uuid()), any_uuid(), prop::option::of(any::<u64>()), cmd)
        .prop_map(|(command_id, correlation_id, causation_id, order, expected_version, command)| {
            CommandMessage {
                metadata: CommandMetadata { command_id, correlation_id, causation_id },
                order_id: OrderId::from_uuid(order),
                expected_version,
                command,
            }
        })
}

pub(crate) fn any_stats() -> impl Strategy<Value = UserWindowStats> {
    (
        text_of(64),
        any_time(),
        1i64..1_000_000,
        any::<u64>(),
        any::<u64>(),
        0i64..=i64::MAX,
        any_currency(),
        any::<bool>(),
        (any::<u64>(), 0i64..=i64::MAX),
    )
        .prop_map(
            |(
                user,
                start,
                len,
                order_count,
                paid_count,
                revenue_minor,
                currency,
                is_final,
                (cancelled_count, refunded_minor),
            )| {
                UserWindowStats {
                    user_id: UserId::new(user).unwrap(),
                    window_start: start,
                    window_end: start + chrono::Duration::seconds(len),
                    order_count,
                    paid_count,
                    revenue_minor,
                    currency,
                    is_final,
                    cancelled_count,
                    refunded_minor,
                }
            },
        )
}
