//! A run's progress: a bar on a terminal (indicatif), a line every five seconds otherwise
//! (a CI log, a file).

use std::{io::IsTerminal as _, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};

/// The progress of a run, updated in the background until [`Progress::finish`].
#[derive(Debug)]
pub struct Progress {
    task: tokio::task::JoinHandle<()>,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts showing how far a run of `total` orders is: `done()` of them, and `line()`
    /// (what the run has done so far).
    pub fn start(
        total: u64,
        done: impl Fn() -> u64 + Send + 'static,
        line: impl Fn() -> String + Send + 'static,
    ) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        let task = tokio::spawn({
            let bar = bar.clone();
            async move {
                let every = if bar.is_some() { Duration::from_millis(250) } else { Duration::from_secs(5) };
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let line = line();
                    match &bar {
                        Some(bar) => {
                            bar.set_position(done());
                            bar.set_message(line);
                        }
                        None => println!("[load] {line}"),
                    }
                }
            }
        });
        Self { task, bar }
    }

    /// Stops it.
    pub fn finish(self) {
        self.task.abort();
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
