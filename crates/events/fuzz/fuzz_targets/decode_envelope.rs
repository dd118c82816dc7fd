//! Fuzzes the decoders of every envelope of the contract.
//!
//! Any input must give a value or an error, never a panic; and whatever
//! decodes must encode and decode again to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orders_events::{decode_command, decode_event, decode_stats, encode_command, encode_event, encode_stats};

fuzz_target!(|data: &[u8]| {
    if let Ok((metadata, event)) = decode_event(data) {
        let again = decode_event(&encode_event(&metadata, &event));
        assert_eq!(again, Ok((metadata, event)));
    }
    if let Ok(message) = decode_command(data) {
        assert_eq!(decode_command(&encode_command(&message)), Ok(message));
    }
    if let Ok(stats) = decode_stats(data) {
        assert_eq!(decode_stats(&encode_stats(&stats)), Ok(stats));
    }
});
