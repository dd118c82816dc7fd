//! The stats-aggregator binary's life: `--help`, health, readiness and a clean stop, run as a
//! child process against the real Kafka and PostgreSQL (`make up`).

use orders_testkit::process::BinarySpec;

const SPEC: BinarySpec = BinarySpec {
    exe: env!("CARGO_BIN_EXE_stats-aggregator"),
    addr_var: "ADMIN_ADDR",
    variables: &[
        "APPLICATION_ID",
        "INSTANCE_ID",
        "WINDOW_SIZE",
        "WINDOW_ADVANCE",
        "WINDOW_GRACE",
        "EMIT_INTERVAL",
        "WALL_CLOCK_CLOSE",
        "COMMIT_INTERVAL",
    ],
    kafka_probes: &["kafka", "restore"],
    postgres_probes: &[],
    topic_vars: &["ORDERS_TOPIC", "ORDER_STATS_TOPIC", "DEAD_LETTER_TOPIC"],
    prefixed_topics: Some(("APPLICATION_ID", stats_aggregator::INTERNAL_TOPICS)),
};

orders_testkit::lifecycle_tests!(SPEC);
