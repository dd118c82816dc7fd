//! The saga with the rest of the system: orders go in through the command API; what the
//! saga did comes out of the query API and the inventory API.

use orders_system_tests::System;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paid_orders_ship_and_orders_without_stock_are_cancelled() {
    let system = System::start().await;
    system.set_stock("SKU-E2E", 5).await;

    // Enough stock: reserved on creation; paid, the saga ships it.
    let filled = system.create("e2e-user", "EUR", &[("SKU-E2E", 2, 700), ("SKU-UNTRACKED", 1, 100)]).await;
    system.wait_stock("SKU-E2E", (3, 2, 0)).await;
    system.pay(&filled, 1500).await;
    let view = system.wait_status(&filled, "shipped").await;
    let shipment = view["shipment"]["shipment_id"].as_str().unwrap_or_default();
    assert!(shipment.starts_with("SHP-"), "the saga's shipment: {view}");
    assert!(view["shipment"]["tracking_number"].as_str().is_some_and(|t| t.starts_with("TRK")), "{view}");
    system.wait_stock("SKU-E2E", (3, 0, 2)).await; // on hand 5 → 3

    // Too little stock: cancelled with the reason, nothing reserved.
    let short = system.create("e2e-user", "EUR", &[("SKU-E2E", 4, 700)]).await;
    let view = system.wait_status(&short, "cancelled").await;
    let reason = view["cancellation"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("out of stock") && reason.contains("SKU-E2E"), "{view}");
    assert_eq!(
        system.stock("SKU-E2E").await,
        json!({ "sku": "SKU-E2E", "available": 3, "reserved": 0, "shipped": 2 })
    );

    system.stop().await;
}
