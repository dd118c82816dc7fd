//! The command-service binary's life: `--help`, health, readiness and a clean stop, run as a
//! child process against the real Kafka and PostgreSQL (`make up`).

use orders_testkit::process::BinarySpec;

const SPEC: BinarySpec = BinarySpec {
    exe: env!("CARGO_BIN_EXE_command-service"),
    addr_var: "HTTP_ADDR",
    variables: &["HTTP_WORKERS", "CONSUMER_GROUP"],
    kafka_probes: &["kafka"],
    postgres_probes: &["postgres", "schema"],
    topic_vars: &["ORDERS_TOPIC", "ORDER_COMMANDS_TOPIC", "DEAD_LETTER_TOPIC"],
    prefixed_topics: None,
};

orders_testkit::lifecycle_tests!(SPEC);

/// The caller's trace continues through the service into the outbox row's headers:
/// same trace id, the service's own span as parent.
#[tokio::test]
async fn the_callers_trace_context_reaches_the_outbox() {
    use orders_testkit::process::{ServiceProcess, World};
    let world = World::for_binary(&SPEC).await;
    let mut service = ServiceProcess::start(SPEC.exe, SPEC.addr_var, &world.env);
    service.wait_for("/readyz", 200, std::time::Duration::from_secs(30)).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let response = reqwest::Client::new()
        .post(format!("http://{}/commands/orders", service.addr()))
        .header("traceparent", &caller)
        .json(&serde_json::json!({"user_id": "u", "currency": "EUR", "items": [{"sku": "A", "quantity": 1, "unit_price_minor": 1}]}))
        .send()
        .await
        .expect("the service answers");
    assert_eq!(response.status(), 201);
    let url =
        world.env.iter().find(|(k, _)| k == "DATABASE_URL").map(|(_, v)| v.clone()).expect("a database");
    let client = orders_testkit::postgres::connect(&url).await;
    let row = client.query_one("SELECT headers FROM outbox", &[]).await.expect("one outbox row");
    let headers: serde_json::Value = row.get(0);
    let stored = headers["traceparent"].as_str().expect("a traceparent header").to_string();
    assert!(stored.starts_with(&format!("00-{trace_id}-")), "{stored}");
    assert_ne!(stored, caller, "the service's span must be the parent, not the caller's");
}
