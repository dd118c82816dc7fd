//! The projection's metrics (listed in the [crate docs](crate)): handles registered once,
//! the applied-per-second window and the lag gauges.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use metrics::{Counter, Gauge, Histogram};

/// Metric handles, registered once.
#[derive(Clone)]
pub(crate) struct Meters {
    pub(crate) applied: Counter,
    pub(crate) rate: Gauge,
    pub(crate) latency: Histogram,
    pub(crate) batch_size: Histogram,
    pub(crate) batch_duration: Histogram,
    pub(crate) dead_letters: Counter,
    pub(crate) conflicts: Counter,
    pub(crate) failures: Counter,
}

impl Meters {
    pub(crate) fn new(name: &str) -> Self {
        let labels = [("projection", name.to_string())];
        Self {
            applied: metrics::counter!("projection_events_applied_total", &labels),
            rate: metrics::gauge!("projection_events_applied_per_second", &labels),
            latency: metrics::histogram!("projection_apply_latency_seconds", &labels),
            batch_size: metrics::histogram!("projection_batch_size", &labels),
            batch_duration: metrics::histogram!("projection_batch_duration_seconds", &labels),
            dead_letters: metrics::counter!("projection_dead_letters_total", &labels),
            conflicts: metrics::counter!("projection_position_conflicts_total", &labels),
            failures: metrics::counter!("projection_apply_failures_total", &labels),
        }
    }
}

/// The applied-per-second gauge, over the last 10 s, and the lag gauges.
pub(crate) struct Rates {
    window: VecDeque<(Instant, usize)>,
    started: Instant,
    lag: HashMap<i32, Gauge>,
}

impl Rates {
    pub(crate) fn new() -> Self {
        Self { window: VecDeque::new(), started: Instant::now(), lag: HashMap::new() }
    }

    /// Counts `n` records committed.
    pub(crate) fn applied(&mut self, meters: &Meters, n: usize) {
        meters.applied.increment(n as u64);
        self.window.push_back((Instant::now(), n));
        self.refresh(meters);
    }

    /// Recomputes the applied-per-second gauge.
    pub(crate) fn refresh(&mut self, meters: &Meters) {
        let now = Instant::now();
        let span = Duration::from_secs(10);
        while self.window.front().is_some_and(|(at, _)| now.duration_since(*at) > span) {
            self.window.pop_front();
        }
        let seconds = now.duration_since(self.started).min(span).as_secs_f64().max(1.0);
        let total: usize = self.window.iter().map(|(_, n)| n).sum();
        meters.rate.set(total as f64 / seconds);
    }

    /// Sets the lag gauge of `partition` (registered on first use).
    pub(crate) fn lag(&mut self, projection: &str, partition: i32, lag: i64) {
        self.lag
            .entry(partition)
            .or_insert_with(|| {
                metrics::gauge!(
                    "projection_consumer_lag",
                    "projection" => projection.to_string(),
                    "partition" => partition.to_string()
                )
            })
            .set(lag as f64);
    }

    /// Zeroes and forgets the lag gauge of a partition no longer assigned.
    pub(crate) fn forget(&mut self, partition: i32) {
        if let Some(gauge) = self.lag.remove(&partition) {
            gauge.set(0.0);
        }
    }
}
