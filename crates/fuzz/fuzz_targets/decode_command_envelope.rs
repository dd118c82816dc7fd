//! The command envelope's decoder (`order-commands` topic), and the stats record's
//! (`order-stats`): any input gives a value or an error, never a panic, and what decodes
//! encodes and decodes again to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orders_events::{decode_command, decode_stats, encode_command, encode_stats};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = decode_command(data) {
        assert_eq!(decode_command(&encode_command(&message)), Ok(message));
    }
    if let Ok(stats) = decode_stats(data) {
        assert_eq!(decode_stats(&encode_stats(&stats)), Ok(stats));
    }
});
