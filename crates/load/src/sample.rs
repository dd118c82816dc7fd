//! The services' backlogs over a run: once a second, each service's Prometheus
//! endpoint, summed over its partitions: consumer lag (`consumer_lag_records`,
//! `projection_consumer_lag`) and the outbox's rows not yet published
//! (`outbox_backlog_rows`).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// The metrics sampled, summed over their labels.
const BACKLOGS: [&str; 3] = ["consumer_lag_records", "projection_consumer_lag", "outbox_backlog_rows"];

/// One sample of every service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t: f64,
    /// Per service: its backlog (records behind, or rows unpublished); absent when its
    /// endpoint did not answer.
    pub backlog: BTreeMap<String, f64>,
}

/// The sum of the samples of the backlog metrics in a Prometheus text exposition.
pub fn backlog_of(exposition: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| {
            BACKLOGS.iter().any(|m| line.strip_prefix(m).is_some_and(|r| r.starts_with(['{', ' '])))
        })
        .filter_map(|line| line.rsplit_once(' ').and_then(|(_, v)| v.trim().parse::<f64>().ok()))
        .filter(|v| v.is_finite())
        .sum()
}

/// Samples `endpoints` (service name, metrics URL) every second until the task is aborted.
pub fn start(
    http: reqwest::Client,
    endpoints: Vec<(String, String)>,
    started: Instant,
    into: Arc<Mutex<Vec<Sample>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let t = started.elapsed().as_secs_f64();
            let mut backlog = BTreeMap::new();
            for (name, url) in &endpoints {
                let answer = http.get(url).timeout(Duration::from_secs(2)).send().await;
                if let Ok(r) = answer
                    && let Ok(text) = r.text().await
                {
                    backlog.insert(name.clone(), backlog_of(&text));
                }
            }
            into.lock().unwrap_or_else(PoisonError::into_inner).push(Sample { t, backlog });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::backlog_of;

    #[test]
    fn backlogs_sum_over_labels_and_other_metrics_are_ignored() {
        let text = "# HELP consumer_lag_records lag\n\
                    consumer_lag_records{topic=\"orders\",partition=\"0\"} 3\n\
                    consumer_lag_records{topic=\"orders\",partition=\"1\"} 4.5\n\
                    consumer_lag_records_total 100\n\
                    outbox_backlog_rows 2\n\
                    outbox_backlog_oldest_age_seconds 9\n";
        assert!((backlog_of(text) - 9.5).abs() < 1e-9);
        assert_eq!(backlog_of("http_requests_total 5\n"), 0.0);
    }
}
