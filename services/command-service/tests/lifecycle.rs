//! The command-service binary's life: `--help`, health, readiness and a clean stop, run as a
//! child process against the real Kafka and PostgreSQL (`make up`).

use orders_testkit::process::{
    BinarySpec, assert_help_lists_variables, assert_not_ready_when, assert_ready_then_clean_exit,
    assert_rejects_bad_value,
};

const SPEC: BinarySpec = BinarySpec {
    exe: env!("CARGO_BIN_EXE_command-service"),
    addr_var: "HTTP_ADDR",
    variables: &[
        "DATABASE_URL",
        "DATABASE_POOL_SIZE",
        "HTTP_WORKERS",
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_PROPERTIES",
        "ORDERS_TOPIC",
        "ORDER_COMMANDS_TOPIC",
        "DEAD_LETTER_TOPIC",
        "CONSUMER_GROUP",
        "RUST_LOG",
        "LOG_FORMAT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "SHUTDOWN_TIMEOUT",
    ],
    uses_postgres: true,
    topic_vars: &["ORDERS_TOPIC", "ORDER_COMMANDS_TOPIC", "DEAD_LETTER_TOPIC"],
};

#[tokio::test]
async fn help_lists_every_variable() {
    assert_help_lists_variables(&SPEC).await;
}

#[tokio::test]
async fn becomes_ready_and_stops_cleanly_on_sigterm() {
    assert_ready_then_clean_exit(&SPEC).await;
}

#[tokio::test]
async fn is_not_ready_while_kafka_is_unreachable() {
    assert_not_ready_when(&SPEC, "KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1", &["kafka"]).await;
}

#[tokio::test]
async fn rejects_a_malformed_address() {
    assert_rejects_bad_value(&SPEC, "HTTP_ADDR", "not-an-address").await;
}

#[tokio::test]
async fn is_not_ready_while_postgres_is_unreachable() {
    assert_not_ready_when(
        &SPEC,
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:1/nowhere",
        &["postgres", "schema"],
    )
    .await;
}

#[tokio::test]
async fn is_not_ready_when_a_topic_does_not_exist() {
    assert_not_ready_when(&SPEC, "ORDERS_TOPIC", "no-such-topic", &["kafka"]).await;
}

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
