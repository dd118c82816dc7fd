//! The outbox-relay binary's life: `--help`, health, readiness and a clean stop, run as a
//! child process against the real Kafka and PostgreSQL (`make up`).

use orders_testkit::process::BinarySpec;

const SPEC: BinarySpec = BinarySpec {
    exe: env!("CARGO_BIN_EXE_outbox-relay"),
    addr_var: "ADMIN_ADDR",
    variables: &[
        "NOTIFY_CHANNEL",
        "POLL_INTERVAL",
        "BATCH_SIZE",
        "RELAY_WORKERS",
        "REBALANCE_INTERVAL",
        "DRAIN_TIMEOUT",
        "STALL_THRESHOLD",
        "RETRY_BACKOFF_MAX",
        "QUARANTINE_AFTER_ATTEMPTS",
        "LEASE_KEEPALIVE_IDLE",
        "LEASE_KEEPALIVE_INTERVAL",
        "LEASE_KEEPALIVE_RETRIES",
        "LEASE_TCP_USER_TIMEOUT",
    ],
    kafka_probes: &["kafka"],
    postgres_probes: &["postgres"],
    topic_vars: &["ORDERS_TOPIC"],
    prefixed_topics: None,
};

orders_testkit::lifecycle_tests!(SPEC);
