//! domain -> protobuf -> bytes -> protobuf -> domain gives back the same value.

use orders_events::{
    command_from_proto, command_to_proto, decode_command, decode_event, decode_stats, encode_command,
    encode_event, encode_stats, event_from_proto, event_to_proto, pb, stats_from_proto, stats_to_proto,
};
use proptest::prelude::*;
use prost::Message;

use crate::fixtures::*;

#[test]
fn every_event_round_trips() {
    for event in events() {
        let envelope = event_to_proto(&metadata(), &event);
        let bytes = envelope.encode_to_vec();
        let decoded = pb::EventEnvelope::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, envelope);
        assert_eq!(event_from_proto(decoded).unwrap(), (metadata(), event.clone()));
        assert_eq!(decode_event(&encode_event(&metadata(), &event)).unwrap(), (metadata(), event));
    }
}

#[test]
fn an_event_without_causation_round_trips() {
    let mut metadata = metadata();
    metadata.causation_id = None;
    let bytes = encode_event(&metadata, &created());
    assert_eq!(decode_event(&bytes).unwrap(), (metadata, created()));
}

#[test]
fn every_command_round_trips() {
    for message in commands() {
        let envelope = command_to_proto(&message);
        let decoded = pb::CommandEnvelope::decode(envelope.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, envelope);
        assert_eq!(command_from_proto(decoded).unwrap(), message);
        assert_eq!(decode_command(&encode_command(&message)).unwrap(), message);
    }
}

#[test]
fn a_pay_command_without_currency_keeps_none() {
    use orders_domain::{PayOrder, PaymentId};
    use orders_events::OrderCommand;
    let message =
        command(Some(0), OrderCommand::Pay(PayOrder::new(PaymentId::new("p").unwrap(), 0, None).unwrap()));
    let envelope = command_to_proto(&message);
    assert_eq!(envelope.expected_version, Some(0));
    assert!(matches!(
        envelope.command,
        Some(pb::command_envelope::Command::Pay(pb::PayOrder { currency: None, .. }))
    ));
    assert_eq!(decode_command(&encode_command(&message)).unwrap(), message);
}

#[test]
fn stats_round_trip() {
    let message = stats_to_proto(&stats());
    let decoded = pb::UserWindowStats::decode(message.encode_to_vec().as_slice()).unwrap();
    assert_eq!(stats_from_proto(decoded).unwrap(), stats());
    assert_eq!(decode_stats(&encode_stats(&stats())).unwrap(), stats());
    assert_eq!(stats().revenue().amount_minor, 5198);
}

proptest! {
    #[test]
    fn any_event_round_trips(metadata in any_metadata(), event in any_event()) {
        let bytes = encode_event(&metadata, &event);
        prop_assert_eq!(decode_event(&bytes).unwrap(), (metadata, event));
    }

    #[test]
    fn any_command_round_trips(message in any_command()) {
        prop_assert_eq!(decode_command(&encode_command(&message)).unwrap(), message);
    }

    #[test]
    fn any_stats_round_trip(stats in any_stats()) {
        prop_assert_eq!(decode_stats(&encode_stats(&stats)).unwrap(), stats);
    }
}
