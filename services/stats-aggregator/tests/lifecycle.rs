//! The stats-aggregator binary's life: `--help`, health, readiness and a clean stop, run as a
//! child process against the real Kafka and PostgreSQL (`make up`).

use orders_testkit::process::BinarySpec;

const SPEC: BinarySpec = BinarySpec {
    exe: env!("CARGO_BIN_EXE_stats-aggregator"),
    addr_var: "ADMIN_ADDR",
    variables: &["APPLICATION_ID"],
    postgres_probes: &[],
    topic_vars: &["ORDERS_TOPIC", "ORDER_STATS_TOPIC"],
};

orders_testkit::lifecycle_tests!(SPEC);
