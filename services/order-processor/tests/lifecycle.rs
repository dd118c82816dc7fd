//! The order-processor binary's life: `--help`, health, readiness and a clean stop, run as a
//! child process against the real Kafka and PostgreSQL (`make up`).

use orders_testkit::process::BinarySpec;

const SPEC: BinarySpec = BinarySpec {
    exe: env!("CARGO_BIN_EXE_order-processor"),
    addr_var: "ADMIN_ADDR",
    variables: &["CONSUMER_GROUP", "CONSUMER_CONCURRENCY", "RETRY_MAX_ATTEMPTS"],
    kafka_probes: &["kafka"],
    postgres_probes: &["postgres", "schema"],
    topic_vars: &["ORDERS_TOPIC", "ORDER_COMMANDS_TOPIC", "DEAD_LETTER_TOPIC"],
    prefixed_topics: None,
};

orders_testkit::lifecycle_tests!(SPEC);
