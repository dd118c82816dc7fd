//! The relay's metric names, recorded with the `metrics` crate (whatever recorder the
//! program installed renders them, for example as Prometheus text).

/// Gauge: rows waiting in the outbox (all shards), sampled every `backlog_interval`.
pub const BACKLOG_ROWS: &str = "outbox_backlog_rows";
/// Gauge: age in seconds of the oldest row waiting (0 when the outbox is empty).
pub const BACKLOG_OLDEST_AGE: &str = "outbox_backlog_oldest_age_seconds";
/// Counter: rows published and acknowledged by the broker (its rate is the publish rate).
pub const PUBLISHED: &str = "outbox_published_total";
/// Histogram: seconds from a row's creation (inside the writer's transaction) to the
/// broker's acknowledgement of its record.
pub const PUBLISH_LATENCY: &str = "outbox_publish_latency_seconds";
/// Histogram: rows per batch read.
pub const BATCH_ROWS: &str = "outbox_batch_rows";
/// Gauge: rows in the quarantine (all relays), sampled every `backlog_interval`; alert
/// when above zero: each holds up the later rows of its key.
pub const QUARANTINE_ROWS: &str = "outbox_quarantine_rows";
/// Counter: rows moved to the quarantine by this relay (they could never be published
/// as they are).
pub const QUARANTINED: &str = "outbox_quarantined_total";
/// Counter: errors, labelled `stage` = `read`, `publish`, `clear`, `quarantine`, `lease`
/// or `backlog`.
pub const ERRORS: &str = "outbox_errors_total";
/// Counter: batches left unfinished at shutdown (their unacknowledged rows stay).
pub const ABANDONED: &str = "outbox_batches_abandoned_total";
/// Gauge: shards this relay owns.
pub const SHARDS_OWNED: &str = "outbox_shards_owned";
/// Gauge: relays holding a membership lock, as this relay last saw them.
pub const MEMBERS: &str = "outbox_relay_members";

/// Registers descriptions of every metric with the installed recorder.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(BACKLOG_ROWS, Unit::Count, "Rows waiting in the outbox");
    describe_gauge!(BACKLOG_OLDEST_AGE, Unit::Seconds, "Age of the oldest row waiting in the outbox");
    describe_counter!(PUBLISHED, Unit::Count, "Outbox rows published and acknowledged by the broker");
    describe_histogram!(PUBLISH_LATENCY, Unit::Seconds, "Time from outbox insert to broker acknowledgement");
    describe_histogram!(BATCH_ROWS, Unit::Count, "Rows per outbox batch");
    describe_counter!(ERRORS, Unit::Count, "Outbox relay errors by stage");
    describe_gauge!(QUARANTINE_ROWS, Unit::Count, "Outbox rows in the quarantine, holding up their keys");
    describe_counter!(QUARANTINED, Unit::Count, "Outbox rows quarantined: they could never be published");
    describe_counter!(ABANDONED, Unit::Count, "Batches left unfinished at shutdown");
    describe_gauge!(SHARDS_OWNED, Unit::Count, "Outbox shards owned by this relay");
    describe_gauge!(MEMBERS, Unit::Count, "Outbox relays seen holding a membership lock");
}
