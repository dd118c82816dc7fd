//! Exponential backoff with jitter, for the loops that retry a failed read, delete,
//! publication or connection.

use std::time::Duration;

/// Delays that double from `min` up to `max`, each drawn in `[d/2, d]` so that relays
/// failing together do not retry in lockstep.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    seed: u64,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let seed = u64::from(std::process::id())
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::from(d.subsec_nanos()));
        Self { min, max: max.max(min), next: min, seed: seed | 1 }
    }

    /// The delay before the next retry; doubles the one after.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let current = self.next;
        self.next = (self.next * 2).min(self.max);
        // xorshift64: jitter needs no quality, only spread.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let fraction = 0.5 + (self.seed % 1000) as f64 / 2000.0;
        current.mul_f64(fraction)
    }

    /// Back to `min` after a success.
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        let bounds = [100, 200, 400, 800, 800];
        for upper in bounds {
            let d = backoff.next_delay();
            let upper = Duration::from_millis(upper);
            assert!(d <= upper && d >= upper / 2, "{d:?} not in [{:?}, {upper:?}]", upper / 2);
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }
}
