//! [`Settings`]: what a consumer is to read and how hard it may push.

use std::time::Duration;

use backon::{BackoffBuilder as _, ExponentialBuilder};
use rdkafka::ClientConfig;

use crate::{Error, Result};

/// How often and how patiently a record whose handling failed for a transient reason
/// is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included; after the last the record is dead-lettered.
    pub max_attempts: u32,
    /// The delay before the second attempt.
    pub min_delay: Duration,
    /// The longest delay between two attempts (the delay doubles up to it, with jitter).
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self { max_attempts: 5, min_delay: Duration::from_millis(100), max_delay: Duration::from_secs(10) }
    }
}

impl Retry {
    /// The delay before attempt `next` of a record whose dependency is unavailable: as
    /// [`Retry::delay_before`], without the limit of attempts (at most `max_delay`).
    pub fn delay_unbounded(&self, next: u32) -> Duration {
        Retry { max_attempts: u32::MAX, ..*self }.delay_before(next.clamp(2, 64)).unwrap_or(self.max_delay)
    }

    /// The delay before attempt `next` (2 for the first retry), or `None` when no
    /// attempt is left. Exponential with full jitter: `backon`'s, the one backoff of
    /// every retry loop here.
    pub fn delay_before(&self, next: u32) -> Option<Duration> {
        if next > self.max_attempts || next < 2 {
            return None;
        }
        let retries = usize::try_from(next - 1).unwrap_or(usize::MAX);
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay.max(self.min_delay))
            .with_max_times(retries)
            .with_jitter()
            .build()
            .nth(retries - 1)
    }
}

/// A consumer's settings. Start from [`Settings::new`] and change what you need.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The consumer's name: its `group.id` unless the configuration sets one, the
    /// `dlq.consumer` header of its dead letters, and its rows' owner in the store.
    pub name: String,
    /// The topics to subscribe to.
    pub topics: Vec<String>,
    /// librdkafka settings (bootstrap servers, security); the consumer overrides those
    /// its guarantees need (see [`crate::consumer_config`]).
    pub config: ClientConfig,
    /// The topic dead letters are produced to.
    pub dead_letter_topic: String,
    /// At most this many records handled at once (over all partitions and keys).
    pub concurrency: usize,
    /// Partitions are paused while this many records are received and not done...
    pub max_buffered_records: usize,
    /// ... or while they hold this many bytes; resumed below half of both.
    pub max_buffered_bytes: usize,
    /// Retries of transient failures.
    pub retry: Retry,
    /// How often the done prefix of each partition is committed.
    pub commit_interval: Duration,
    /// On a rebalance, how long the records of revoked partitions that are being
    /// handled may take to finish before the partitions are let go anyway (their
    /// records are then handled again by the next owner; the inbox makes that safe).
    pub revoke_timeout: Duration,
    /// At shutdown, how long the records being handled may take to finish.
    pub drain_timeout: Duration,
}

impl Settings {
    /// Settings for consumer `name` of `topics`, with the client configuration `config`
    /// (bootstrap servers at least), dead-lettering to `dead_letter_topic`.
    pub fn new(
        name: impl Into<String>,
        topics: &[&str],
        config: ClientConfig,
        dead_letter_topic: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            topics: topics.iter().map(ToString::to_string).collect(),
            config,
            dead_letter_topic: dead_letter_topic.into(),
            concurrency: 64,
            max_buffered_records: 10_000,
            max_buffered_bytes: 64 * 1024 * 1024,
            retry: Retry::default(),
            commit_interval: Duration::from_millis(500),
            revoke_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let problem = if self.name.is_empty() {
            Some("the name is empty")
        } else if self.topics.is_empty() {
            Some("no topic to subscribe to")
        } else if self.concurrency == 0 {
            Some("concurrency must be at least 1")
        } else if self.max_buffered_records == 0 || self.max_buffered_bytes == 0 {
            Some("the buffer limits must be above zero")
        } else if self.retry.max_attempts == 0 {
            Some("at least one attempt is needed")
        } else if self.topics.contains(&self.dead_letter_topic) {
            Some("the dead-letter topic is one of the subscribed topics")
        } else {
            None
        };
        problem.map_or(Ok(()), |p| Err(Error::Settings(p.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_within_bounds_and_stop_after_the_last_attempt() {
        let retry = Retry {
            max_attempts: 4,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        assert_eq!(retry.delay_before(1), None);
        for next in 2..=4 {
            let delay = retry.delay_before(next).expect("an attempt is left");
            assert!(delay <= Duration::from_secs(2), "{next}: {delay:?}");
        }
        assert_eq!(retry.delay_before(5), None);
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let ok = Settings::new("c", &["orders"], ClientConfig::new(), "dlq.orders");
        assert!(ok.validate().is_ok());
        let looped = Settings::new("c", &["orders"], ClientConfig::new(), "orders");
        assert!(looped.validate().is_err());
        let idle = Settings { concurrency: 0, ..ok };
        assert!(idle.validate().is_err());
    }
}
