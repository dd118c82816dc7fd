//! [`RelayOptions`]: every setting of a relay, with defaults a production relay can
//! start from, and the one retry backoff its loops share.

use std::time::Duration;

use backon::ExponentialBuilder;

use crate::{Error, Result};

/// Settings of a [`Relay`](crate::Relay); [`RelayOptions::default`] gives sensible ones.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Number of shards the writers spread keys over (the `shard` column is in
    /// `0 .. shards`). Must match the writers.
    pub shards: i32,
    /// Channel the writers `NOTIFY` at commit; `None` relies on polling alone.
    pub notify_channel: Option<String>,
    /// How often an idle worker looks for rows without being notified: the fallback
    /// for a missed notification.
    pub poll_interval: Duration,
    /// Rows read, produced and cleared per batch (per worker).
    pub batch_size: usize,
    /// Workers per relay; each takes the owned shards `s` with `s % workers == i`. One
    /// is usually enough (it pipelines its own batches); more run more batches at once
    /// but read once each per notification, and each has a Kafka producer of its own.
    pub workers: usize,
    /// How often the relay checks membership and takes or hands back shards.
    pub rebalance_interval: Duration,
    /// At shutdown, how long a batch in flight may still wait for its
    /// acknowledgements before it is left (unacknowledged rows stay in the outbox).
    pub drain_timeout: Duration,
    /// How long a batch may wait for acknowledgements, or publications keep failing
    /// for other reasons than the record itself, before the status reports the relay
    /// not ready (the broker is down or unreachable, the producer is broken).
    pub stall_threshold: Duration,
    /// First delay before retrying a failed read, clear, publication or session.
    pub retry_backoff_min: Duration,
    /// Longest delay between retries (before jitter, which adds up to as much again).
    pub retry_backoff_max: Duration,
    /// Failed attempts to publish one row, for a reason that is the record's own (the
    /// topic does not exist, the record is too large or invalid), after which the row
    /// is moved to the quarantine table (see "Rows that can never be published" in the
    /// crate docs); a record the producer itself refuses for good is quarantined at its
    /// first attempt. At least 1.
    pub quarantine_after: u32,
    /// First key of the advisory locks (shard locks are `(namespace, shard)`, the
    /// membership lock `(namespace, i32::MAX)`); change it only to run two unrelated
    /// relays on one database.
    pub lock_namespace: i32,
    /// How often the backlog gauges are refreshed.
    pub backlog_interval: Duration,
    /// TCP keepalive and user timeout of the lease session, on both ends.
    pub lease_keepalive: SessionKeepalive,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            shards: 64,
            notify_channel: Some("outbox".into()),
            poll_interval: Duration::from_secs(1),
            batch_size: 5000,
            workers: 1,
            rebalance_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(10),
            stall_threshold: Duration::from_secs(5),
            retry_backoff_min: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(5),
            quarantine_after: 10,
            lock_namespace: 0x6f75_7462, // "outb"
            backlog_interval: Duration::from_secs(5),
            lease_keepalive: SessionKeepalive::default(),
        }
    }
}

/// How soon a dead peer of the lease session is noticed, by this relay and, which
/// matters more, by the server: the server holds the session's shard locks until it
/// sees the session end, so a relay cut off by a silent network partition keeps its
/// shards until the server's keepalive gives up (about two hours with the operating
/// system's defaults). The relay sets these on its own socket and, for the session
/// only, on the server's (`tcp_keepalives_idle`, `tcp_keepalives_interval`,
/// `tcp_keepalives_count`, `tcp_user_timeout`). With the defaults a silent peer is
/// given up after about 25 s of keepalives, or 30 s of unacknowledged data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionKeepalive {
    /// Idle time before the first keepalive probe (whole seconds, at least 1).
    pub idle: Duration,
    /// Time between unanswered probes (whole seconds, at least 1).
    pub interval: Duration,
    /// Unanswered probes after which the connection is dropped (at least 1).
    pub retries: u32,
    /// How long sent data may stay unacknowledged before the connection is dropped
    /// (`TCP_USER_TIMEOUT`, whole milliseconds; zero leaves the system's default).
    pub user_timeout: Duration,
}

impl Default for SessionKeepalive {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(10),
            interval: Duration::from_secs(5),
            retries: 3,
            user_timeout: Duration::from_secs(30),
        }
    }
}

impl RelayOptions {
    pub(crate) fn validate(&self) -> Result<()> {
        let keepalive = &self.lease_keepalive;
        let problem = if self.shards < 1 {
            "shards must be at least 1"
        } else if self.shards == i32::MAX {
            "shards must be below i32::MAX (the membership lock's key)"
        } else if self.batch_size == 0 {
            "batch_size must be at least 1"
        } else if self.workers == 0 {
            "workers must be at least 1"
        } else if self.poll_interval.is_zero() || self.rebalance_interval.is_zero() {
            "poll_interval and rebalance_interval must be positive"
        } else if self.quarantine_after == 0 {
            "quarantine_after must be at least 1"
        } else if keepalive.idle.as_secs() == 0 || keepalive.interval.as_secs() == 0 || keepalive.retries == 0
        {
            "the lease keepalive idle time, interval and retries must be at least 1 (seconds)"
        } else if i32::try_from(keepalive.user_timeout.as_millis()).is_err()
            || i32::try_from(keepalive.idle.as_secs()).is_err()
            || i32::try_from(keepalive.interval.as_secs()).is_err()
            || i32::try_from(keepalive.retries).is_err()
        {
            "the lease keepalive settings are too large"
        } else {
            return Ok(());
        };
        Err(Error::Options(problem.into()))
    }

    /// The backoff of every retry loop of the relay: exponential from
    /// `retry_backoff_min` to `retry_backoff_max`, with jitter so that relays failing
    /// together do not retry in lockstep, never giving up. Build a fresh one after a
    /// success.
    pub(crate) fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::new()
            .with_min_delay(self.retry_backoff_min)
            .with_max_delay(self.retry_backoff_max.max(self.retry_backoff_min))
            .with_jitter()
            .without_max_times()
    }
}

#[cfg(test)]
mod tests {
    use backon::BackoffBuilder as _;

    use super::*;

    #[test]
    fn retry_delays_grow_to_the_cap_with_jitter_and_never_end() {
        let options = RelayOptions {
            retry_backoff_min: Duration::from_millis(100),
            retry_backoff_max: Duration::from_millis(800),
            ..RelayOptions::default()
        };
        let delays: Vec<Duration> = options.backoff().build().take(20).collect();
        assert_eq!(delays.len(), 20, "the backoff never gives up");
        for (delay, base) in delays.iter().zip([100, 200, 400, 800, 800]) {
            let base = Duration::from_millis(base);
            assert!(*delay >= base && *delay <= base * 2, "{delay:?} not in [{base:?}, {:?}]", base * 2);
        }
    }

    #[test]
    fn inconsistent_options_are_refused() {
        assert!(RelayOptions::default().validate().is_ok());
        for options in [
            RelayOptions { quarantine_after: 0, ..RelayOptions::default() },
            RelayOptions { batch_size: 0, ..RelayOptions::default() },
            RelayOptions {
                lease_keepalive: SessionKeepalive {
                    idle: Duration::from_millis(10),
                    ..SessionKeepalive::default()
                },
                ..RelayOptions::default()
            },
        ] {
            assert!(matches!(options.validate(), Err(Error::Options(_))), "{options:?}");
        }
    }
}
