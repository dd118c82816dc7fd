//! Metric names (through the `metrics` facade; the program installs a recorder).

/// Records being handled now (gauge).
pub const IN_FLIGHT: &str = "consumer_in_flight";
/// Records received and not done yet, in flight or waiting (gauge).
pub const BUFFERED: &str = "consumer_buffered_records";
/// Keys held back behind a dead letter (gauge).
pub const HELD_KEYS: &str = "consumer_held_keys";
/// Keys waiting for a retry of their head record (gauge).
pub const RETRYING_KEYS: &str = "consumer_retrying_keys";
/// Records parked behind their key's dead letter (counter).
pub const PARKED: &str = "consumer_parked_total";
/// Retries of transient failures (counter).
pub const RETRIES: &str = "consumer_retries_total";
/// Records dead-lettered, by reason kind (counter).
pub const DEAD_LETTERS: &str = "consumer_dead_letters_total";
/// Records handled, by outcome (counter).
pub const HANDLED: &str = "consumer_handled_total";
/// Records of a type no handler is registered for (counter).
pub const UNROUTED: &str = "consumer_unrouted_total";
/// How long one handler call took, in seconds (histogram).
pub const HANDLER_SECONDS: &str = "consumer_handler_seconds";
/// Records behind the end of each partition (gauge, by partition).
pub const LAG: &str = "consumer_lag_records";
/// Rebalances of this member, by kind: `assigned` or `revoked` partitions (counter).
pub const REBALANCES: &str = "consumer_rebalances_total";
/// Whether fetching is paused because the buffer is full (gauge, 0 or 1).
pub const PAUSED: &str = "consumer_paused";

/// Registers descriptions of every metric with the installed recorder, and the dead
/// letter counters at 0: a counter that first appears at 1 shows no increase to
/// Prometheus, so the first dead letter would alert nobody.
pub fn describe() {
    for kind in ["permanent", "exhausted"] {
        metrics::counter!(DEAD_LETTERS, "kind" => kind).increment(0);
    }
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(IN_FLIGHT, "Records being handled now.");
    describe_gauge!(BUFFERED, "Records received and not done yet.");
    describe_gauge!(HELD_KEYS, "Keys held back behind a dead letter.");
    describe_gauge!(RETRYING_KEYS, "Keys waiting for a retry of their head record.");
    describe_counter!(PARKED, "Records parked behind their key's dead letter.");
    describe_counter!(RETRIES, "Retries of transient handler failures.");
    describe_counter!(DEAD_LETTERS, "Records dead-lettered.");
    describe_counter!(HANDLED, "Records handled, by outcome.");
    describe_counter!(UNROUTED, "Records of a type no handler is registered for.");
    describe_histogram!(HANDLER_SECONDS, metrics::Unit::Seconds, "Duration of one handler call.");
    describe_gauge!(LAG, "Records behind the end of the partition.");
    describe_gauge!(PAUSED, "1 while fetching is paused because the buffer is full.");
    describe_counter!(REBALANCES, "Rebalances of this member, by kind (assigned, revoked).");
}
