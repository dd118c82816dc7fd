//! The progress of a long-running operation run by hand (a rebuild, a replay of dead
//! letters): on a terminal, a progress bar on stderr (done / total, rate, time left);
//! otherwise (a Kubernetes Job, a pipe) a structured log line every few seconds and one
//! at the end, so that the log shows how far it got and how long is left.
//!
//! ```no_run
//! # async fn example() {
//! let progress = orders_runtime::progress::Progress::start("replay", 250);
//! for _ in 0..250 {
//!     // ... one unit of work ...
//!     progress.inc(1);
//! }
//! progress.finish();
//! # }
//! ```

use std::{
    io::{IsTerminal as _, Write},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the log lines come when stderr is not a terminal.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// The bar on the terminal now, if any: log lines are written with it hidden.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Runs `write` with the progress bar on the terminal (if any) hidden, so that what it
/// writes is not drawn over. The log writers of [`crate::telemetry`] write through it.
pub fn suspend<R>(write: impl FnOnce() -> R) -> R {
    let bar = ACTIVE_BAR.lock().unwrap_or_else(PoisonError::into_inner).clone();
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// A writer whose every write happens with the progress bar hidden ([`suspend`]).
#[derive(Debug)]
pub struct Suspending<W>(pub W);

impl<W: Write> Write for Suspending<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        suspend(|| self.0.write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        suspend(|| self.0.write_all(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// A progress bar on stderr.
    Bar,
    /// A log line (`tracing`, target `progress`) every period, and one at the end.
    Log(Duration),
}

/// Where an operation stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// Units done.
    pub done: u64,
    /// Units in all (at least `done`).
    pub total: u64,
    /// Units per second since the start.
    pub rate: f64,
    /// The time left at that rate; `None` before the first unit.
    pub eta: Option<Duration>,
}

impl Snapshot {
    /// Where `done` of `total` units stand `elapsed` after the start.
    pub fn at(done: u64, total: u64, elapsed: Duration) -> Self {
        let total = total.max(done);
        let seconds = elapsed.as_secs_f64();
        let rate = if seconds > 0.0 { done as f64 / seconds } else { 0.0 };
        let eta = (rate > 0.0).then(|| Duration::from_secs_f64((total - done) as f64 / rate));
        Self { done, total, rate, eta }
    }
}

#[derive(Debug)]
struct Counts {
    task: &'static str,
    done: AtomicU64,
    total: AtomicU64,
    started: Instant,
    /// Set by the last line: no periodic line comes after it.
    finished: Mutex<bool>,
}

impl Counts {
    fn snapshot(&self) -> Snapshot {
        let (done, total) = (self.done.load(Ordering::Relaxed), self.total.load(Ordering::Relaxed));
        Snapshot::at(done, total, self.started.elapsed())
    }

    /// A periodic line, unless the last one was written.
    fn tick(&self) {
        let finished = self.finished.lock().unwrap_or_else(PoisonError::into_inner);
        if !*finished {
            self.log("progress");
        }
    }

    /// The last line.
    fn last(&self) {
        let mut finished = self.finished.lock().unwrap_or_else(PoisonError::into_inner);
        *finished = true;
        self.log("finished");
    }

    fn log(&self, message: &'static str) {
        let s = self.snapshot();
        tracing::info!(
            target: "progress",
            task = self.task,
            done = s.done,
            total = s.total,
            rate_per_second = (s.rate * 10.0).round() / 10.0,
            eta_seconds = s.eta.map(|eta| eta.as_secs()),
            "{message}"
        );
    }
}

/// The progress of one operation; cheap to update from its loop.
#[derive(Debug)]
pub struct Progress {
    counts: Arc<Counts>,
    bar: Option<ProgressBar>,
    reporter: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts showing the progress of `task` out of `total` units: a bar when stderr is
    /// a terminal, log lines every [`LOG_EVERY`] otherwise (outside a Tokio runtime, only
    /// the first and the last).
    pub fn start(task: &'static str, total: u64) -> Self {
        let display = if std::io::stderr().is_terminal() { Display::Bar } else { Display::Log(LOG_EVERY) };
        Self::with_display(task, total, display)
    }

    /// As [`Progress::start`], shown as `display` says.
    pub fn with_display(task: &'static str, total: u64, display: Display) -> Self {
        let counts = Arc::new(Counts {
            task,
            done: AtomicU64::new(0),
            total: AtomicU64::new(total),
            started: Instant::now(),
            finished: Mutex::new(false),
        });
        match display {
            Display::Bar => {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                let style = ProgressStyle::with_template(
                    "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} left {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar());
                bar.set_style(style);
                bar.set_message(task);
                *ACTIVE_BAR.lock().unwrap_or_else(PoisonError::into_inner) = Some(bar.clone());
                Self { counts, bar: Some(bar), reporter: None }
            }
            Display::Log(every) => {
                counts.log("started");
                let reporter = tokio::runtime::Handle::try_current().ok().map(|runtime| {
                    let counts = Arc::clone(&counts);
                    runtime.spawn(async move {
                        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                        loop {
                            ticks.tick().await;
                            counts.tick();
                        }
                    })
                });
                Self { counts, bar: None, reporter }
            }
        }
    }

    /// Counts `n` more units done.
    pub fn inc(&self, n: u64) {
        self.show(self.counts.done.fetch_add(n, Ordering::Relaxed) + n);
    }

    /// Sets the units done (for work measured in positions, such as offsets).
    pub fn set(&self, done: u64) {
        self.counts.done.store(done, Ordering::Relaxed);
        self.show(done);
    }

    fn show(&self, done: u64) {
        if done > self.counts.total.load(Ordering::Relaxed) {
            self.set_total(done);
        }
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
    }

    /// Sets the units in all (work that grows while it runs).
    pub fn set_total(&self, total: u64) {
        self.counts.total.store(total, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    /// Where the operation stands now.
    pub fn snapshot(&self) -> Snapshot {
        self.counts.snapshot()
    }

    /// The work is done: everything counted (what was left uncounted, such as the
    /// transaction markers of a topic, too), with a last line or the bar's last state.
    pub fn finish(mut self) {
        self.set(self.counts.total.load(Ordering::Relaxed));
        self.stop();
        match self.bar.take() {
            Some(bar) => bar.finish(),
            None => self.counts.last(),
        }
    }

    fn stop(&mut self) {
        if let Some(reporter) = self.reporter.take() {
            reporter.abort();
        }
        if self.bar.is_some() {
            *ACTIVE_BAR.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
    }
}

/// Dropped unfinished (the operation failed): the bar stays as it was, the reporter stops.
impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_left_follows_the_rate_so_far() {
        let s = Snapshot::at(50, 200, Duration::from_secs(10));
        assert_eq!((s.done, s.total, s.rate), (50, 200, 5.0));
        assert_eq!(s.eta, Some(Duration::from_secs(30)));
    }

    #[test]
    fn nothing_done_yet_has_no_time_left() {
        assert_eq!(Snapshot::at(0, 10, Duration::from_secs(3)).eta, None);
        assert_eq!(Snapshot::at(0, 10, Duration::ZERO).rate, 0.0);
    }

    #[test]
    fn more_done_than_planned_raises_the_total() {
        let s = Snapshot::at(12, 10, Duration::from_secs(4));
        assert_eq!((s.total, s.eta), (12, Some(Duration::ZERO)));
    }

    #[tokio::test]
    async fn counts_add_up_and_the_total_grows_with_the_work() {
        let progress = Progress::with_display("test", 5, Display::Log(Duration::from_millis(10)));
        progress.inc(3);
        progress.inc(4);
        assert_eq!((progress.snapshot().done, progress.snapshot().total), (7, 7));
        progress.set_total(20);
        progress.set(9);
        assert_eq!((progress.snapshot().done, progress.snapshot().total), (9, 20));
        progress.finish();
    }

    #[test]
    fn outside_a_runtime_it_logs_without_a_reporter() {
        let progress = Progress::with_display("test", 3, Display::Log(Duration::from_millis(10)));
        assert!(progress.reporter.is_none());
        progress.inc(1);
        progress.finish();
    }

    #[tokio::test]
    async fn finishing_counts_everything_and_ends_the_lines() {
        let progress = Progress::with_display("test", 2, Display::Log(Duration::from_millis(1)));
        let counts = Arc::clone(&progress.counts);
        progress.finish();
        assert!(*counts.finished.lock().unwrap_or_else(PoisonError::into_inner));
        assert_eq!(counts.snapshot().done, 2, "finished counts everything");
    }
}
