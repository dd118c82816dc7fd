//! Bad bytes give an error value that says what is wrong, never a panic.

use orders_domain::{Field, FieldError, OrderError};
use orders_events::{
    DecodeError, decode_command, decode_event, decode_stats, encode_command, encode_event, encode_stats,
    event_to_proto, pb, stats_to_proto,
};
use proptest::prelude::*;
use prost::Message;

use crate::fixtures::*;

fn envelope() -> pb::EventEnvelope {
    event_to_proto(&metadata(), &created())
}

fn decode_envelope(envelope: &pb::EventEnvelope) -> Result<(), DecodeError> {
    decode_event(&envelope.encode_to_vec()).map(|_| ())
}

fn created_payload(envelope: &mut pb::EventEnvelope) -> &mut pb::OrderCreated {
    match envelope.payload.as_mut() {
        Some(pb::event_envelope::Payload::OrderCreated(created)) => created,
        _ => unreachable!("the fixture is an OrderCreated"),
    }
}

#[test]
fn every_truncation_is_an_error() {
    for event in events() {
        let bytes = encode_event(&metadata(), &event);
        for len in 0..bytes.len() {
            assert!(decode_event(&bytes[..len]).is_err(), "{} cut at {len}", event.event_type());
        }
    }
    for message in commands() {
        let bytes = encode_command(&message);
        for len in 0..bytes.len() {
            assert!(decode_command(&bytes[..len]).is_err(), "{} cut at {len}", message.command.name());
        }
    }
    // Stats end with a bool: a cut before it can be a valid message, but never
    // the original one.
    let bytes = encode_stats(&stats());
    for len in 0..bytes.len() {
        assert_ne!(decode_stats(&bytes[..len]).ok(), Some(stats()), "cut at {len}");
    }
}

#[test]
fn a_truncated_payload_is_a_protobuf_error() {
    let bytes = encode_event(&metadata(), &created());
    let err = decode_event(&bytes[..bytes.len() - 1]).unwrap_err();
    assert!(matches!(err, DecodeError::Protobuf { message: "EventEnvelope", .. }), "{err}");
    assert!(err.to_string().starts_with("not a valid EventEnvelope Protobuf message"), "{err}");
}

#[test]
fn a_wrong_wire_type_is_a_protobuf_error() {
    // Field 1 (event_id, a string) sent as a varint.
    let err = decode_event(&[0x08, 0x01]).unwrap_err();
    assert!(matches!(err, DecodeError::Protobuf { message: "EventEnvelope", .. }), "{err}");
    let err = decode_command(&[0x08, 0x01]).unwrap_err();
    assert!(matches!(err, DecodeError::Protobuf { message: "CommandEnvelope", .. }), "{err}");
    let err = decode_stats(&[0x08, 0x01]).unwrap_err();
    assert!(matches!(err, DecodeError::Protobuf { message: "UserWindowStats", .. }), "{err}");
}

#[test]
fn garbage_is_an_error() {
    for bytes in [&[0xff; 16][..], &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], &[0x00]] {
        assert!(decode_event(bytes).is_err());
        assert!(decode_command(bytes).is_err());
        assert!(decode_stats(bytes).is_err());
    }
}

#[test]
fn a_message_of_another_type_is_an_error() {
    let event = encode_event(&metadata(), &created());
    let command = encode_command(&ship());
    let stats = encode_stats(&stats());
    assert!(decode_event(&command).is_err());
    assert!(decode_event(&stats).is_err());
    assert!(decode_command(&event).is_err());
    assert!(decode_command(&stats).is_err());
    assert!(decode_stats(&event).is_err());
    assert!(decode_stats(&command).is_err());
}

#[test]
fn an_unknown_oneof_case_is_an_unknown_payload() {
    let mut envelope = envelope();
    envelope.payload = None;
    let mut bytes = envelope.encode_to_vec();
    // Field 14, length-delimited: an event type from a newer schema.
    bytes.extend([(14 << 3) | 2, 3, 0x0a, 1, b'x']);
    assert_eq!(decode_event(&bytes), Err(DecodeError::UnknownPayload { message: "EventEnvelope" }));
    // No payload at all.
    assert_eq!(decode_envelope(&envelope), Err(DecodeError::UnknownPayload { message: "EventEnvelope" }));
    // The same for commands: field 29.
    let mut command = orders_events::command_to_proto(&ship());
    command.command = None;
    let mut bytes = command.encode_to_vec();
    bytes.extend([0xea, 0x01, 0]); // tag (29 << 3) | 2 as a varint, then length 0
    assert_eq!(decode_command(&bytes), Err(DecodeError::UnknownPayload { message: "CommandEnvelope" }));
}

#[test]
fn unknown_fields_are_skipped() {
    // A field added by a newer schema, next to everything this reader knows.
    let mut bytes = encode_event(&metadata(), &paid());
    bytes.extend([(9 << 3), 42]);
    assert_eq!(decode_event(&bytes).unwrap(), (metadata(), paid()));
}

#[test]
fn metadata_errors_name_the_field() {
    let mut e = envelope();
    e.event_id = String::new();
    assert_eq!(decode_envelope(&e), Err(DecodeError::MissingField { field: "event_id".into() }));

    let mut e = envelope();
    e.order_id = "not-a-uuid".into();
    assert_eq!(decode_envelope(&e), Err(DecodeError::InvalidUuid { field: "order_id".into() }));

    let mut e = envelope();
    e.correlation_id = String::new();
    assert_eq!(decode_envelope(&e), Err(DecodeError::MissingField { field: "correlation_id".into() }));

    let mut e = envelope();
    e.causation_id = "x".into();
    assert_eq!(decode_envelope(&e), Err(DecodeError::InvalidUuid { field: "causation_id".into() }));

    let mut e = envelope();
    e.version = 0;
    assert_eq!(
        decode_envelope(&e),
        Err(DecodeError::InvalidValue {
            field: "version".into(),
            problem: FieldError::NotPositive { value: 0 }
        })
    );

    let mut e = envelope();
    e.occurred_at = None;
    assert_eq!(decode_envelope(&e), Err(DecodeError::MissingField { field: "occurred_at".into() }));

    for (seconds, nanos) in [(0, -1), (0, 1_000_000_000), (i64::MAX, 0), (i64::MIN, 0)] {
        let mut e = envelope();
        e.occurred_at = Some(prost_types::Timestamp { seconds, nanos });
        assert_eq!(
            decode_envelope(&e),
            Err(DecodeError::InvalidTimestamp { field: "occurred_at".into() }),
            "{seconds} {nanos}"
        );
    }
}

#[test]
fn payload_errors_name_the_field_or_the_rule() {
    let mut e = envelope();
    created_payload(&mut e).currency = "eur".into();
    assert_eq!(
        decode_envelope(&e),
        Err(DecodeError::InvalidValue {
            field: "order_created.currency".into(),
            problem: FieldError::NotCurrencyCode
        })
    );

    let mut e = envelope();
    created_payload(&mut e).items[1].sku = String::new();
    let err = decode_envelope(&e).unwrap_err();
    assert_eq!(
        err,
        DecodeError::InvalidValue { field: "order_created.items[1].sku".into(), problem: FieldError::Empty }
    );
    assert_eq!(err.to_string(), "order_created.items[1].sku: must not be empty or blank");

    let mut e = envelope();
    created_payload(&mut e).items.clear();
    assert_eq!(
        decode_envelope(&e),
        Err(DecodeError::Rule { message: "OrderCreated", rule: OrderError::NoItems })
    );

    let mut e = envelope();
    created_payload(&mut e).items[0].quantity = 0;
    assert_eq!(
        decode_envelope(&e),
        Err(DecodeError::Rule {
            message: "OrderCreated",
            rule: OrderError::invalid(Field::ItemQuantity(0), FieldError::NotPositive { value: 0 })
        })
    );

    let mut e = envelope();
    created_payload(&mut e).items[0].unit_price_minor = i64::MAX;
    assert_eq!(
        decode_envelope(&e),
        Err(DecodeError::Rule { message: "OrderCreated", rule: OrderError::TotalOverflow })
    );

    let mut e = envelope();
    created_payload(&mut e).total_minor = 1;
    assert_eq!(decode_envelope(&e), Err(DecodeError::TotalMismatch { expected: 2599, found: 1 }));

    let mut e = event_to_proto(&metadata(), &paid());
    if let Some(pb::event_envelope::Payload::OrderPaid(paid)) = e.payload.as_mut() {
        paid.amount_minor = -5;
    }
    assert_eq!(
        decode_envelope(&e),
        Err(DecodeError::InvalidValue {
            field: "order_paid.amount_minor".into(),
            problem: FieldError::Negative { value: -5 }
        })
    );

    let mut e = event_to_proto(&metadata(), &cancelled());
    if let Some(pb::event_envelope::Payload::OrderCancelled(c)) = e.payload.as_mut() {
        c.reason = "a\nb".into();
    }
    assert_eq!(
        decode_envelope(&e),
        Err(DecodeError::InvalidValue {
            field: "order_cancelled.reason".into(),
            problem: FieldError::ControlCharacter
        })
    );
}

#[test]
fn command_errors_name_the_field_or_the_rule() {
    let mut c = orders_events::command_to_proto(&pay());
    if let Some(pb::command_envelope::Command::Pay(pay)) = c.command.as_mut() {
        pay.amount_minor = -1;
    }
    assert_eq!(
        decode_command(&c.encode_to_vec()),
        Err(DecodeError::Rule {
            message: "PayOrder",
            rule: OrderError::invalid(Field::AmountMinor, FieldError::Negative { value: -1 })
        })
    );

    let mut c = orders_events::command_to_proto(&ship());
    c.command_id = "nope".into();
    assert_eq!(
        decode_command(&c.encode_to_vec()),
        Err(DecodeError::InvalidUuid { field: "command_id".into() })
    );

    let mut c = orders_events::command_to_proto(&ship());
    if let Some(pb::command_envelope::Command::Ship(ship)) = c.command.as_mut() {
        ship.tracking_number = "x".repeat(65);
    }
    assert_eq!(
        decode_command(&c.encode_to_vec()),
        Err(DecodeError::InvalidValue {
            field: "ship.tracking_number".into(),
            problem: FieldError::TooLong { len: 65, max: 64 }
        })
    );
}

#[test]
fn stats_errors_name_the_field() {
    let mut s = stats_to_proto(&stats());
    s.window_end = s.window_start;
    assert_eq!(decode_stats(&s.encode_to_vec()), Err(DecodeError::InvalidWindow));

    let mut s = stats_to_proto(&stats());
    s.revenue_minor = -1;
    assert_eq!(
        decode_stats(&s.encode_to_vec()),
        Err(DecodeError::InvalidValue {
            field: "revenue_minor".into(),
            problem: FieldError::Negative { value: -1 }
        })
    );

    let mut s = stats_to_proto(&stats());
    s.refunded_minor = -5;
    assert_eq!(
        decode_stats(&s.encode_to_vec()),
        Err(DecodeError::InvalidValue {
            field: "refunded_minor".into(),
            problem: FieldError::Negative { value: -5 }
        })
    );

    let mut s = stats_to_proto(&stats());
    s.user_id = String::new();
    assert_eq!(
        decode_stats(&s.encode_to_vec()),
        Err(DecodeError::InvalidValue { field: "user_id".into(), problem: FieldError::Empty })
    );

    let mut s = stats_to_proto(&stats());
    s.window_start = None;
    assert_eq!(
        decode_stats(&s.encode_to_vec()),
        Err(DecodeError::MissingField { field: "window_start".into() })
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_event(&bytes);
        let _ = decode_command(&bytes);
        let _ = decode_stats(&bytes);
    }

    #[test]
    fn mutated_messages_never_panic(
        which in 0usize..8,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = match which {
            0..4 => encode_event(&metadata(), &events()[which]),
            4..7 => encode_command(&commands()[which - 4]),
            _ => encode_stats(&stats()),
        };
        for (index, value) in flips {
            let i = index.index(bytes.len());
            bytes[i] = value;
        }
        let _ = decode_event(&bytes);
        let _ = decode_command(&bytes);
        let _ = decode_stats(&bytes);
    }
}
