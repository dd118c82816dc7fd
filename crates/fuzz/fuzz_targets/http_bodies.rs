//! The command API's JSON bodies, as command-service reads them: the depth check
//! (`orders_runtime::limits::json_depth_exceeds`, a hand-written scanner), then each
//! body's JSON into its input type and the input into its command (the domain's
//! validation: amounts, quantities, totals, texts). Any input gives a command or an
//! error, never a panic; and the scanner agrees with serde_json: a body it passes at
//! depth 16 is never refused by serde_json for recursion.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orders_domain::{
    CancelOrder, CancelOrderInput, CreateOrder, CreateOrderInput, PayOrder, PayOrderInput, ShipOrder,
    ShipOrderInput,
};

fuzz_target!(|data: &[u8]| {
    if orders_runtime::limits::json_depth_exceeds(data, 16) {
        return;
    }
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(data) {
        assert!(!e.to_string().contains("recursion limit"), "depth check passed a body too deep: {e}");
    }
    if let Ok(input) = serde_json::from_slice::<CreateOrderInput>(data) {
        let _ = CreateOrder::try_from(input);
    }
    if let Ok(input) = serde_json::from_slice::<PayOrderInput>(data) {
        let _ = PayOrder::try_from(input);
    }
    if let Ok(input) = serde_json::from_slice::<ShipOrderInput>(data) {
        let _ = ShipOrder::try_from(input);
    }
    if let Ok(input) = serde_json::from_slice::<CancelOrderInput>(data) {
        let _ = CancelOrder::try_from(input);
    }
});
