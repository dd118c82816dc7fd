//! Golden bytes: the wire format of one example of each message, pinned.
//!
//! Each test checks both directions: today's encoder writes exactly the
//! pinned bytes, and today's decoder reads the pinned bytes back into the
//! example. A schema change that renumbers, retypes or drops a field fails
//! here. Change a pinned value only for a compatible change (see
//! `proto/README.md`), never to make a breaking one pass.

use orders_domain::OrderEvent;
use orders_events::{
    CommandMessage, UserWindowStats, decode_command, decode_event, decode_stats, encode_command,
    encode_event, encode_stats,
};

use crate::fixtures::*;

fn check_event(event: OrderEvent, pinned: &str) {
    let bytes = encode_event(&metadata(), &event);
    assert_eq!(hex(&bytes), pinned, "{} encoding changed", event.event_type());
    assert_eq!(decode_event(&unhex(pinned)).unwrap(), (metadata(), event));
}

fn check_command(message: CommandMessage, pinned: &str) {
    let bytes = encode_command(&message);
    assert_eq!(hex(&bytes), pinned, "{} encoding changed", message.command.name());
    assert_eq!(decode_command(&unhex(pinned)).unwrap(), message);
}

#[test]
fn order_created() {
    check_event(
        created(),
        concat!(
            "0a2430313930623765302d313233342d373030302d383030302d303030303030303030303031", // 1: event_id
            "122430313930623765302d313233342d373030302d383030302d303030303030303030303034", // 2: order_id
            "1801",                                                                         // 3: version
            "220b0880c3bbc20610c0a9d33a",                                                   // 4: occurred_at
            "2a2430313930623765302d313233342d373030302d383030302d303030303030303030303032", // 5: correlation_id
            "322430313930623765302d313233342d373030302d383030302d303030303030303030303033", // 6: causation_id
            "52270a05616c69636512034555521a0b0a04626f6f6b100218e2091a090a0370656e1001", // 10: order_created
            "186320a714",
        ),
    );
}

#[test]
fn order_paid() {
    check_event(
        paid(),
        concat!(
            "0a2430313930623765302d313233342d373030302d383030302d303030303030303030303031", // 1: event_id
            "122430313930623765302d313233342d373030302d383030302d303030303030303030303034", // 2: order_id
            "1802",                                                                         // 3: version
            "220b0880c3bbc20610c0a9d33a",                                                   // 4: occurred_at
            "2a2430313930623765302d313233342d373030302d383030302d303030303030303030303032", // 5: correlation_id
            "322430313930623765302d313233342d373030302d383030302d303030303030303030303033", // 6: causation_id
            "5a0f0a057061792d3110a7141a03455552",                                           // 11: order_paid
        ),
    );
}

#[test]
fn order_shipped() {
    check_event(
        shipped(),
        concat!(
            "0a2430313930623765302d313233342d373030302d383030302d303030303030303030303031", // 1: event_id
            "122430313930623765302d313233342d373030302d383030302d303030303030303030303034", // 2: order_id
            "1803",                                                                         // 3: version
            "220b0880c3bbc20610c0a9d33a",                                                   // 4: occurred_at
            "2a2430313930623765302d313233342d373030302d383030302d303030303030303030303032", // 5: correlation_id
            "322430313930623765302d313233342d373030302d383030302d303030303030303030303033", // 6: causation_id
            "62100a06736869702d31120654524b313233", // 12: order_shipped
        ),
    );
}

#[test]
fn order_cancelled() {
    check_event(
        cancelled(),
        concat!(
            "0a2430313930623765302d313233342d373030302d383030302d303030303030303030303031", // 1: event_id
            "122430313930623765302d313233342d373030302d383030302d303030303030303030303034", // 2: order_id
            "1802",                                                                         // 3: version
            "220b0880c3bbc20610c0a9d33a",                                                   // 4: occurred_at
            "2a2430313930623765302d313233342d373030302d383030302d303030303030303030303032", // 5: correlation_id
            "322430313930623765302d313233342d373030302d383030302d303030303030303030303033", // 6: causation_id
            "6a0e0a0c6f7574206f662073746f636b", // 13: order_cancelled
        ),
    );
}

#[test]
fn ship_order() {
    check_command(
        ship(),
        concat!(
            "0a2430313930623765302d313233342d373030302d383030302d303030303030303030303035", // 1: command_id
            "122430313930623765302d313233342d373030302d383030302d303030303030303030303034", // 2: order_id
            "1802", // 3: expected_version
            "222430313930623765302d313233342d373030302d383030302d303030303030303030303032", // 4: correlation_id
            "2a2430313930623765302d313233342d373030302d383030302d303030303030303030303031", // 5: causation_id
            "a201100a06736869702d31120654524b313233",                                       // 20: ship
        ),
    );
}

#[test]
fn cancel_order() {
    check_command(
        cancel(),
        concat!(
            "0a2430313930623765302d313233342d373030302d383030302d303030303030303030303035", // 1: command_id
            "122430313930623765302d313233342d373030302d383030302d303030303030303030303034", // 2: order_id
            "222430313930623765302d313233342d373030302d383030302d303030303030303030303032", // 4: correlation_id
            "2a2430313930623765302d313233342d373030302d383030302d303030303030303030303031", // 5: causation_id
            "aa010e0a0c6f7574206f662073746f636b",                                           // 21: cancel
        ),
    );
}

#[test]
fn pay_order() {
    check_command(
        pay(),
        concat!(
            "0a2430313930623765302d313233342d373030302d383030302d303030303030303030303035", // 1: command_id
            "122430313930623765302d313233342d373030302d383030302d303030303030303030303034", // 2: order_id
            "1801", // 3: expected_version
            "222430313930623765302d313233342d373030302d383030302d303030303030303030303032", // 4: correlation_id
            "2a2430313930623765302d313233342d373030302d383030302d303030303030303030303031", // 5: causation_id
            "b2010f0a057061792d3110a7141a03455552",                                         // 22: pay
        ),
    );
}

#[test]
fn user_window_stats() {
    let pinned = concat!(
        "0a05616c696365",   // 1: user_id
        "12060880c3bbc206", // 2: window_start
        "1a0608bcc3bbc206", // 3: window_end
        "2003",             // 4: order_count
        "2802",             // 5: paid_count
        "30ce28",           // 6: revenue_minor
        "3a03455552",       // 7: currency
        "4001",             // 8: is_final
        "4801",             // 9: cancelled_count
        "50930a",           // 10: refunded_minor
    );
    assert_eq!(hex(&encode_stats(&stats())), pinned, "UserWindowStats encoding changed");
    assert_eq!(decode_stats(&unhex(pinned)).unwrap(), stats());
}

/// A message written before `cancelled_count` and `refunded_minor` existed (fields 1-8
/// only) still decodes: both read as zero.
#[test]
fn user_window_stats_of_before_the_cancellation_fields() {
    let old = concat!(
        "0a05616c696365",
        "12060880c3bbc206",
        "1a0608bcc3bbc206",
        "2003",
        "2802",
        "30ce28",
        "3a03455552",
        "4001"
    );
    let decoded = decode_stats(&unhex(old)).unwrap();
    assert_eq!((decoded.cancelled_count, decoded.refunded_minor), (0, 0));
    assert_eq!(decoded, UserWindowStats { cancelled_count: 0, refunded_minor: 0, ..stats() });
}
