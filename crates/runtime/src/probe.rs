//! Readiness probes: can this process do its work right now?
//!
//! `GET /readyz` runs every registered probe concurrently, each under a deadline, and
//! answers 200 only when all pass. Liveness (`GET /healthz`) never runs them: a broken
//! database must take a replica out of the load balancer, not make the orchestrator
//! restart it in a loop.

use std::{fmt, future::Future, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use rdkafka::{
    ClientConfig,
    consumer::{BaseConsumer, Consumer},
};
use serde::Serialize;

type CheckFn = dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync;

/// One named readiness check.
#[derive(Clone)]
pub struct Probe {
    name: Arc<str>,
    check: Arc<CheckFn>,
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The outcome of one probe, as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ProbeResult {
    /// The probe's name.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Probe {
    /// A probe from any async check; `Err` carries the reason shown by `/readyz`.
    pub fn new<F, Fut>(name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let name: String = name.into();
        Self { name: name.into(), check: Arc::new(move || Box::pin(check())) }
    }

    /// Passes when a connection can be taken from `pool` and answers `SELECT 1`.
    pub fn postgres(name: impl Into<String>, pool: deadpool_postgres::Pool) -> Self {
        Self::new(name, move || {
            let pool = pool.clone();
            async move {
                let client = pool.get().await.map_err(|e| format!("no connection: {e}"))?;
                client.simple_query("SELECT 1").await.map_err(|e| format!("query failed: {e}"))?;
                Ok(())
            }
        })
    }

    /// Passes when the brokers answer a metadata request and every topic in `topics`
    /// exists (topics are created explicitly, so a missing one is a configuration error).
    pub fn kafka(name: impl Into<String>, config: &ClientConfig, topics: Vec<String>) -> crate::Result<Self> {
        let mut config = config.clone();
        config.set("log.connection.close", "false");
        let client: Arc<BaseConsumer> = Arc::new(config.create()?);
        let topics: Arc<[String]> = topics.into();
        Ok(Self::new(name, move || {
            let client = Arc::clone(&client);
            let topics = Arc::clone(&topics);
            async move {
                tokio::task::spawn_blocking(move || {
                    let metadata = client
                        .fetch_metadata(None, Duration::from_secs(3))
                        .map_err(|e| format!("brokers unreachable: {e}"))?;
                    let missing: Vec<&str> = topics
                        .iter()
                        .filter(|t| {
                            !metadata.topics().iter().any(|m| m.name() == t.as_str() && m.error().is_none())
                        })
                        .map(String::as_str)
                        .collect();
                    if missing.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("missing topics: {}", missing.join(", ")))
                    }
                })
                .await
                .map_err(|e| format!("probe task failed: {e}"))?
            }
        }))
    }

    /// The probe's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the check; one that takes longer than `deadline` fails.
    pub async fn check(&self, deadline: Duration) -> ProbeResult {
        let outcome = match tokio::time::timeout(deadline, (self.check)()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {deadline:?}")),
        };
        ProbeResult { name: self.name.to_string(), ok: outcome.is_ok(), error: outcome.err() }
    }
}

/// Runs all probes concurrently.
pub async fn check_all(probes: &[Probe], deadline: Duration) -> Vec<ProbeResult> {
    futures::future::join_all(probes.iter().map(|p| p.check(deadline))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_passing_probe_reports_ok() {
        let probe = Probe::new("always", || async { Ok(()) });
        let result = probe.check(Duration::from_secs(1)).await;
        assert_eq!(result, ProbeResult { name: "always".into(), ok: true, error: None });
    }

    #[tokio::test]
    async fn a_failing_probe_reports_its_reason() {
        let probe = Probe::new("never", || async { Err("down".to_string()) });
        let result = probe.check(Duration::from_secs(1)).await;
        assert_eq!(result.error.as_deref(), Some("down"));
        assert!(!result.ok);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_probe_fails_at_its_deadline() {
        let probe = Probe::new("slow", || async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        });
        let result = probe.check(Duration::from_secs(2)).await;
        assert!(!result.ok);
        assert_eq!(result.error.as_deref(), Some("no answer within 2s"));
    }
}
