//! The event envelope's decoder (`orders` topic): any input gives an event or an error,
//! never a panic, and what decodes encodes and decodes again to the same event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orders_events::{decode_event, encode_event};

fuzz_target!(|data: &[u8]| {
    if let Ok((metadata, event)) = decode_event(data) {
        let again = decode_event(&encode_event(&metadata, &event));
        assert_eq!(again, Ok((metadata, event)));
    }
});
