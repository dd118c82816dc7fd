//! The projector binary's life: `--help`, health, readiness and a clean stop, run as a
//! child process against the real Kafka and PostgreSQL (`make up`).

use orders_testkit::process::BinarySpec;

const SPEC: BinarySpec = BinarySpec {
    exe: env!("CARGO_BIN_EXE_projector"),
    addr_var: "HTTP_ADDR",
    variables: &[
        "APPLY_CONNECTIONS",
        "HTTP_WORKERS",
        "CONSUMER_GROUP",
        "WINDOWS_CONSUMER_GROUP",
        "BATCH_SIZE",
        "BATCH_WAIT",
        "MIN_VERSION_TIMEOUT",
        "MIN_VERSION_MAX_WAITERS",
    ],
    kafka_probes: &["kafka"],
    postgres_probes: &["postgres", "schema"],
    topic_vars: &["ORDERS_TOPIC", "ORDER_STATS_TOPIC", "DEAD_LETTER_TOPIC"],
    prefixed_topics: None,
};

orders_testkit::lifecycle_tests!(SPEC);
