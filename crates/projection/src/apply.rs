//! One partition batch, applied in one transaction: claim the position, let the handler
//! write, dead-letter what it refused, advance the position, commit; retried with
//! [`backoff`](crate::backoff) until it commits, the position turns out moved, or
//! shutdown begins.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use backon::Retryable as _;
use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, error, warn};

use crate::{
    Batch, Error, Handler, Record, Result, Settings,
    dead_letter::DeadLetters,
    meters::Meters,
    positions::{Claim, Positions},
    state::Applied,
};

/// From this many failed attempts in a row on, a failure logs at ERROR.
const LOUD_AFTER: u32 = 5;

/// What the batch tasks share with the loop.
pub(crate) struct Shared<H> {
    pub(crate) handler: H,
    pub(crate) pool: Pool,
    pub(crate) positions: Positions,
    pub(crate) settings: Settings,
    pub(crate) dead_letters: DeadLetters,
    pub(crate) meters: Meters,
}

impl<H: Handler> Shared<H> {
    /// Applies one partition batch, retrying with backoff until it commits, the
    /// position turns out moved, or shutdown begins (an attempt in progress finishes;
    /// only the waits between attempts are cut short).
    pub(crate) async fn apply_with_retry(
        &self,
        partition: i32,
        expected: Option<i64>,
        records: &[Record],
        token: &CancellationToken,
    ) -> Applied {
        let attempts = AtomicU32::new(0);
        let attempt = || self.apply_once(partition, expected, records);
        let sleeper = {
            let token = token.clone();
            move |delay: Duration| {
                let token = token.clone();
                async move {
                    tokio::select! {
                        () = token.cancelled() => {}
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        let outcome = attempt
            .retry(crate::backoff())
            .sleep(sleeper)
            .when(|_| !token.is_cancelled())
            .notify(|e: &Error, delay| {
                let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
                self.meters.failures.increment(1);
                let name = &self.settings.name;
                if attempt >= LOUD_AFTER {
                    error!(projection = %name, partition, attempt, error = %e, retry_in = ?delay, "applying a batch keeps failing; retrying");
                } else {
                    warn!(projection = %name, partition, attempt, error = %e, retry_in = ?delay, "applying a batch failed; retrying");
                }
            })
            .await;
        match outcome {
            Ok(Some(next_offset)) => {
                let now_ms = now_millis();
                let latencies = records
                    .iter()
                    .filter_map(|r| r.timestamp_ms)
                    .map(|ts| Duration::from_millis(u64::try_from(now_ms - ts).unwrap_or(0)))
                    .collect();
                Applied::Committed { next_offset, latencies }
            }
            Ok(None) => Applied::Moved,
            Err(e) => {
                self.meters.failures.increment(1);
                warn!(projection = %self.settings.name, partition, error = %e, "applying a batch failed; shutting down before it could commit");
                Applied::Interrupted
            }
        }
    }

    /// One attempt: claim the position, apply, dead-letter, advance, commit. `None`
    /// when another writer moved the position.
    ///
    /// It runs in a span of its own, `projection apply`, linked to the trace context
    /// (`traceparent` header) of each record, up to [`orders_trace_context::MAX_LINKS`]: a batch is the child
    /// of none of its records.
    async fn apply_once(
        &self,
        partition: i32,
        expected: Option<i64>,
        records: &[Record],
    ) -> Result<Option<i64>> {
        let span = tracing::info_span!(
            "projection apply",
            otel.kind = "consumer",
            projection = %self.settings.name,
            messaging.destination.name = %self.settings.topic,
            partition,
            batch.size = records.len(),
        );
        for record in records.iter().take(orders_trace_context::MAX_LINKS) {
            orders_trace_context::add_link(
                &span,
                record.header(orders_trace_context::TRACEPARENT),
                record.header(orders_trace_context::TRACESTATE),
            );
        }
        self.apply_in_span(partition, expected, records).instrument(span).await
    }

    async fn apply_in_span(
        &self,
        partition: i32,
        expected: Option<i64>,
        records: &[Record],
    ) -> Result<Option<i64>> {
        let Some(last) = records.last() else { return Ok(expected) };
        let started = Instant::now();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let Claim::Held { exists } = self.positions.claim(&tx, partition, expected).await? else {
            return Ok(None);
        };
        let batch = Batch { topic: &self.settings.topic, partition, records };
        let outcome = self.handler.apply(&tx, &batch).await.map_err(|e| Error::Handler(Box::new(e)))?;
        for dead in &outcome.dead_letters {
            if let Some(record) = records.get(dead.index) {
                self.dead_letters.send(record, &dead.reason).await?;
            }
        }
        let next_offset = last.offset + 1;
        if let Claim::Moved = self.positions.advance(&tx, partition, exists, next_offset).await? {
            return Ok(None);
        }
        tx.commit().await?;
        self.meters.batch_size.record(records.len() as f64);
        self.meters.batch_duration.record(started.elapsed().as_secs_f64());
        if !outcome.dead_letters.is_empty() {
            self.meters.dead_letters.increment(outcome.dead_letters.len() as u64);
        }
        Ok(Some(next_offset))
    }
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
