//! [`Settings`] of a projection, and [`consumer_config`]: the consumer configuration it
//! runs with.

use std::{fmt, time::Duration};

use rdkafka::ClientConfig;

/// Settings of a [`Projection`].
#[derive(Clone)]
pub struct Settings {
    /// The projection's name: its key in the positions table and its `projection`
    /// metric label.
    pub name: String,
    /// The topic to project.
    pub topic: String,
    /// Where records the handler refuses go.
    pub dead_letter_topic: String,
    /// Most records in one partition batch (one transaction), and polled at once.
    pub max_batch: usize,
    /// Longest wait, after the first record of a poll, for more records.
    pub max_wait: Duration,
    /// Consumer configuration (with `group.id` when subscribing). Auto-commit is turned
    /// off whatever it says.
    pub consumer: ClientConfig,
    /// Producer configuration for the dead-letter topic.
    pub producer: ClientConfig,
}

impl fmt::Debug for Settings {
    /// Leaves out the client configurations, which may hold credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("name", &self.name)
            .field("topic", &self.topic)
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("max_batch", &self.max_batch)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

/// `base` with the settings a projection's consumer runs with: auto-commit off,
/// statistics every 2 s (for the lag gauges) and, unless `base` says otherwise,
/// `fetch.queue.backoff.ms=10` and `session.timeout.ms=10000`. librdkafka's default
/// backoff (1 s) stops fetching a partition for a whole second whenever its local queue
/// is full, which starves a consumer that empties the queue faster than that. The
/// broker's default session (45 s) is how long a crashed member's partitions wait
/// before the group gives them to another member or to its restarted self; librdkafka
/// heartbeats from a thread of its own, which a busy handler does not hold up.
pub fn consumer_config(base: &ClientConfig) -> ClientConfig {
    let mut config = base.clone();
    config.set("enable.auto.commit", "false");
    for (key, value) in [
        ("statistics.interval.ms", "2000"),
        ("fetch.queue.backoff.ms", "10"),
        ("session.timeout.ms", "10000"),
    ] {
        if config.get(key).is_none() {
            config.set(key, value);
        }
    }
    config
}
