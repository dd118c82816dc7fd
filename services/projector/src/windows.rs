//! [`Windows`]: the [`Handler`] that keeps the latest `UserWindowStats` of `order-stats`
//! per user, window and currency (the windows read model, schema [`SCHEMA`]).
//!
//! The stats aggregator re-emits a window as it changes and once more, final, when it
//! closes; it writes `order-stats` in Kafka transactions, and the projection reads it
//! with `read_committed`, so an aborted attempt is never shown. The last record of a
//! window wins: within a batch, the last record of each window is written (one row per
//! window, one statement for the batch); across batches, the stored position says where
//! the next batch starts, and a row is only replaced by a later record of its partition.
//!
//! A record whose value does not decode, or whose key is not its user id, is
//! dead-lettered.

use std::collections::HashMap;

use chrono::{DateTime, Datelike as _, Utc};
use deadpool_postgres::Transaction;
use orders_events::{UserWindowStats, decode_stats};
use orders_projection::{Batch, DeadLetter, Handler, Outcome, Record};

use crate::project::expect_key;

/// The schema of the windows read model (see `migrations/V4__user_windows.sql`).
pub const SCHEMA: &str = "window_stats";

/// The windows read model's handler. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Windows;

impl Handler for Windows {
    type Error = tokio_postgres::Error;

    async fn apply(&self, tx: &Transaction<'_>, batch: &Batch<'_>) -> Result<Outcome, Self::Error> {
        let mut outcome = Outcome::default();
        // The last record of each window (user, start, end, currency), with its offset.
        let mut latest = HashMap::new();
        for (index, record) in batch.records.iter().enumerate() {
            match decode(record) {
                Ok(stats) => {
                    let key = (stats.user_id.clone(), stats.window_start, stats.window_end, stats.currency);
                    latest.insert(key, (record.offset, stats));
                }
                Err(reason) => outcome.dead_letters.push(DeadLetter { index, reason }),
            }
        }
        if !latest.is_empty() {
            upsert(tx, batch.partition, &latest.into_values().collect::<Vec<_>>()).await?;
        }
        Ok(outcome)
    }
}

/// Decodes one record; `Err` is the dead-letter reason.
fn decode(record: &Record) -> Result<UserWindowStats, String> {
    let payload = record.payload.as_deref().ok_or("the record has no value")?;
    let mut stats = decode_stats(payload).map_err(|e| format!("undecodable window stats: {e}"))?;
    // As PostgreSQL keeps them (microseconds, years 1 to 9999 here), so that two records
    // of one window are one row, and no batch fails on a time it cannot store.
    for at in [&mut stats.window_start, &mut stats.window_end] {
        if !(1..=9999).contains(&at.year()) {
            return Err(format!("window time {at} is outside the years 1 to 9999"));
        }
        // (Not `duration_trunc`: it counts in nanoseconds from 1970, past 2262 it fails.)
        let micros = at.timestamp_micros();
        *at = DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| format!("window time {at} out of range"))?;
    }
    let user_id = stats.user_id.as_str();
    expect_key(record, user_id, || format!("the window's user id `{user_id}`"))?;
    Ok(stats)
}

/// Writes the windows with one statement (one binary array parameter per column).
async fn upsert(
    tx: &Transaction<'_>,
    partition: i32,
    windows: &[(i64, UserWindowStats)],
) -> Result<(), tokio_postgres::Error> {
    let count = |f: fn(&UserWindowStats) -> u64| -> Vec<i64> {
        windows.iter().map(|(_, w)| i64::try_from(f(w)).unwrap_or(i64::MAX)).collect()
    };
    let amount = |f: fn(&UserWindowStats) -> i64| -> Vec<i64> { windows.iter().map(|(_, w)| f(w)).collect() };
    let user_id: Vec<&str> = windows.iter().map(|(_, w)| w.user_id.as_str()).collect();
    let currency: Vec<&str> = windows.iter().map(|(_, w)| w.currency.as_str()).collect();
    let window_start: Vec<DateTime<Utc>> = windows.iter().map(|(_, w)| w.window_start).collect();
    let window_end: Vec<DateTime<Utc>> = windows.iter().map(|(_, w)| w.window_end).collect();
    let last: Vec<bool> = windows.iter().map(|(_, w)| w.is_final).collect();
    let offset: Vec<i64> = windows.iter().map(|(offset, _)| *offset).collect();
    let stmt = tx.prepare_cached(include_str!("sql/upsert_windows.sql")).await?;
    tx.execute(
        &stmt,
        &[
            &partition,
            &user_id,
            &window_start,
            &window_end,
            &currency,
            &count(|w| w.order_count),
            &count(|w| w.paid_count),
            &count(|w| w.cancelled_count),
            &amount(|w| w.revenue_minor),
            &amount(|w| w.refunded_minor),
            &last,
            &offset,
        ],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;
    use orders_events::encode_stats;

    use super::*;

    fn stats(user: &str) -> UserWindowStats {
        UserWindowStats {
            user_id: user.parse().unwrap(),
            window_start: Utc.with_ymd_and_hms(2026, 1, 1, 10, 0, 0).unwrap(),
            window_end: Utc.with_ymd_and_hms(2026, 1, 1, 11, 0, 0).unwrap(),
            order_count: 2,
            paid_count: 1,
            revenue_minor: 500,
            currency: "EUR".parse().unwrap(),
            is_final: false,
            cancelled_count: 0,
            refunded_minor: 0,
        }
    }

    fn record(key: Option<&str>, payload: Option<Vec<u8>>) -> Record {
        Record {
            partition: 0,
            offset: 7,
            key: key.map(|k| k.as_bytes().to_vec()),
            payload,
            timestamp_ms: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn a_record_keyed_by_its_user_decodes() {
        let value = encode_stats(&stats("u-1"));
        assert_eq!(decode(&record(Some("u-1"), Some(value))), Ok(stats("u-1")));
    }

    #[test]
    fn window_times_are_kept_as_postgresql_keeps_them() {
        let mut fine = stats("u-1");
        fine.window_start += chrono::TimeDelta::nanoseconds(1_500);
        let decoded = decode(&record(Some("u-1"), Some(encode_stats(&fine)))).unwrap();
        assert_eq!(decoded.window_start, stats("u-1").window_start + chrono::TimeDelta::microseconds(1));
        let mut far = stats("u-1");
        far.window_end = Utc.with_ymd_and_hms(12_000, 1, 1, 0, 0, 0).unwrap();
        let refused = decode(&record(Some("u-1"), Some(encode_stats(&far)))).unwrap_err();
        assert!(refused.contains("outside the years 1 to 9999"), "{refused}");
    }

    #[test]
    fn bad_records_get_a_reason() {
        let value = encode_stats(&stats("u-1"));
        let wrong_key = decode(&record(Some("u-2"), Some(value))).unwrap_err();
        assert!(wrong_key.contains("`u-2` is not the window's user id `u-1`"), "{wrong_key}");
        assert_eq!(decode(&record(Some("u-1"), None)).unwrap_err(), "the record has no value");
        let garbage = decode(&record(Some("u-1"), Some(vec![0xff, 0x01]))).unwrap_err();
        assert!(garbage.starts_with("undecodable window stats"), "{garbage}");
    }
}
