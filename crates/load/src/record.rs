//! What a load run measured: one HDR histogram per measure over the whole run, and per
//! second of the run the histograms of the HTTP round trips and of the read model's
//! visibility (the latency over time of the report's charts), with the commands
//! accepted in that second.

use std::{
    collections::BTreeMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The measures, each a histogram of microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// A create's HTTP round trip; in an open-loop run, from when it was due to be sent,
    /// so that a stalled system shows in the latency instead of in a lower rate
    /// (coordinated omission), and including the retries it took.
    HttpCreate,
    /// A pay's round trip, with its retries.
    HttpPay,
    /// A cancel's round trip, with its retries.
    HttpCancel,
    /// From a command's 2xx to the read model showing its version.
    VisibleCreate,
    /// As for pay.
    VisiblePay,
    /// As for cancel.
    VisibleCancel,
    /// From a pay's 2xx to the read model showing the order shipped by the saga.
    PaidToShipped,
    /// From a create's 2xx to the user's windows (the stats aggregator, through
    /// `order-stats` and the projector) counting the order; measured on probe users,
    /// whose only order it is.
    CreateToStats,
}

impl Measure {
    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            Self::HttpCreate => "HTTP create",
            Self::HttpPay => "HTTP pay",
            Self::HttpCancel => "HTTP cancel",
            Self::VisibleCreate => "create → read model",
            Self::VisiblePay => "pay → read model",
            Self::VisibleCancel => "cancel → read model",
            Self::PaidToShipped => "pay → shipped (saga)",
            Self::CreateToStats => "create → windows",
        }
    }

    fn is_http(self) -> bool {
        matches!(self, Self::HttpCreate | Self::HttpPay | Self::HttpCancel)
    }

    fn is_visibility(self) -> bool {
        matches!(self, Self::VisibleCreate | Self::VisiblePay | Self::VisibleCancel)
    }
}

/// The percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th.
    pub p99_ms: f64,
    /// 99.9th.
    pub p999_ms: f64,
    /// The largest value.
    pub max_ms: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// One second of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Second {
    /// Seconds since the run started.
    pub t: u64,
    /// Commands accepted (2xx) in it.
    pub accepted: u64,
    /// The HTTP round trips of the commands answered in it.
    pub http: Percentiles,
    /// The visibility of the commands that became visible in it.
    pub visible: Percentiles,
}

struct Slot {
    accepted: u64,
    http: Histogram<u64>,
    visible: Histogram<u64>,
}

struct Inner {
    totals: BTreeMap<Measure, Histogram<u64>>,
    seconds: Vec<Slot>,
}

/// The histograms of a run, shared by its tasks.
pub struct Recorder {
    started: Instant,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").field("started", &self.started).finish_non_exhaustive()
    }
}

/// Microseconds, 3 significant digits: up to an hour, auto-resized past it (about 190 KB).
fn histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    h.auto(true);
    h
}

/// A second's histogram: 2 significant digits up to 10 minutes (about 10 KB: a run keeps
/// two per second).
fn coarse_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid bounds");
    h.auto(true);
    h
}

/// Records `us`, resizing past the highest bound (saturating only when that fails).
fn record(h: &mut Histogram<u64>, us: u64) {
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

impl Recorder {
    /// An empty recorder; its seconds count from `started`.
    pub fn new(started: Instant) -> Self {
        Self { started, inner: Mutex::new(Inner { totals: BTreeMap::new(), seconds: Vec::new() }) }
    }

    /// Records `value` of `measure`, at the current second.
    pub fn record(&self, measure: Measure, value: Duration) {
        let us = u64::try_from(value.as_micros()).unwrap_or(u64::MAX).max(1);
        let second = self.started.elapsed().as_secs() as usize;
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        record(inner.totals.entry(measure).or_insert_with(histogram), us);
        if measure.is_http() || measure.is_visibility() {
            while inner.seconds.len() <= second {
                inner.seconds.push(Slot {
                    accepted: 0,
                    http: coarse_histogram(),
                    visible: coarse_histogram(),
                });
            }
            let slot = &mut inner.seconds[second];
            if measure.is_http() {
                slot.accepted += 1;
                record(&mut slot.http, us);
            } else {
                record(&mut slot.visible, us);
            }
        }
    }

    /// The percentiles of each measure recorded.
    pub fn totals(&self) -> BTreeMap<Measure, Percentiles> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.totals.iter().map(|(m, h)| (*m, Percentiles::of(h))).collect()
    }

    /// The median of `measure` so far, if any was recorded.
    pub fn median(&self, measure: Measure) -> Option<Duration> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.totals.get(&measure).map(|h| Duration::from_micros(h.value_at_quantile(0.5)))
    }

    /// The run second by second.
    pub fn seconds(&self) -> Vec<Second> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner
            .seconds
            .iter()
            .enumerate()
            .map(|(t, s)| Second {
                t: t as u64,
                accepted: s.accepted,
                http: Percentiles::of(&s.http),
                visible: Percentiles::of(&s.visible),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_what_was_recorded() {
        let recorder = Recorder::new(Instant::now());
        for ms in 1..=1000 {
            recorder.record(Measure::HttpCreate, Duration::from_millis(ms));
        }
        let totals = recorder.totals();
        let p = totals[&Measure::HttpCreate];
        assert_eq!(p.count, 1000);
        // Three significant digits: within 0.1 % of the exact rank.
        assert!((p.p50_ms - 500.0).abs() <= 0.5, "{p:?}");
        assert!((p.p99_ms - 990.0).abs() <= 1.0, "{p:?}");
        assert!((p.max_ms - 1000.0).abs() <= 1.0, "{p:?}");
        assert!(!totals.contains_key(&Measure::HttpPay));
        let seconds = recorder.seconds();
        assert_eq!(seconds.iter().map(|s| s.accepted).sum::<u64>(), 1000);
        assert_eq!(seconds.iter().map(|s| s.visible.count).sum::<u64>(), 0);
    }

    #[test]
    fn a_value_past_the_highest_bound_is_kept() {
        let recorder = Recorder::new(Instant::now());
        recorder.record(Measure::CreateToStats, Duration::from_secs(7200));
        assert!(recorder.totals()[&Measure::CreateToStats].max_ms >= 7_200_000.0 * 0.999);
    }
}
