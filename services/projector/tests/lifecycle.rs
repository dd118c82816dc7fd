//! The projector binary's life: `--help`, health, readiness and a clean stop, run as a
//! child process against the real Kafka and PostgreSQL (`make up`).

use orders_testkit::process::{
    BinarySpec, assert_help_lists_variables, assert_not_ready_when, assert_ready_then_clean_exit,
    assert_rejects_bad_value,
};

const SPEC: BinarySpec = BinarySpec {
    exe: env!("CARGO_BIN_EXE_projector"),
    addr_var: "HTTP_ADDR",
    variables: &[
        "DATABASE_URL",
        "DATABASE_POOL_SIZE",
        "APPLY_CONNECTIONS",
        "HTTP_WORKERS",
        "KAFKA_BOOTSTRAP_SERVERS",
        "KAFKA_PROPERTIES",
        "ORDERS_TOPIC",
        "DEAD_LETTER_TOPIC",
        "CONSUMER_GROUP",
        "BATCH_SIZE",
        "BATCH_WAIT",
        "MIN_VERSION_TIMEOUT",
        "RUST_LOG",
        "LOG_FORMAT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "SHUTDOWN_TIMEOUT",
    ],
    uses_postgres: true,
    topic_vars: &["ORDERS_TOPIC", "DEAD_LETTER_TOPIC"],
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
