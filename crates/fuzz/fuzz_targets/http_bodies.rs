//! The command API's JSON bodies, as command-service reads them: the depth check
//! (`orders_runtime::limits::json_depth_exceeds`, a hand-written scanner), then each
//! body's JSON into its input type and the input into its command (the domain's
//! validation: amounts, quantities, totals, texts). Any input gives a command or an
//! error, never a panic; and the scanner agrees with serde_json: on JSON that parses,
//! it refuses exactly what nests deeper than 16 levels.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orders_domain::{
    CancelOrder, CancelOrderInput, CreateOrder, CreateOrderInput, PayOrder, PayOrderInput, ShipOrder,
    ShipOrderInput,
};

/// How deep `value` nests objects and arrays (a scalar: 0).
fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(members) => 1 + members.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let exceeds = orders_runtime::limits::json_depth_exceeds(data, 16);
    match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(value) => assert_eq!(exceeds, depth(&value) > 16, "the depth check disagrees with the JSON"),
        Err(e) => assert!(exceeds || !e.to_string().contains("recursion limit"), "passed a body too deep: {e}"),
    }
    if exceeds {
        return;
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
