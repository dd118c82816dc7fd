//! The relay's SQL on the pooled connections: read a batch, clear acknowledged rows,
//! quarantine a row, measure the backlog. Statements live in `sql/` and run as cached
//! prepared statements.

use std::time::SystemTime;

use deadpool_postgres::{Pool, PoolError};

/// A failed statement or no connection; the caller retries with backoff.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("no database connection: {0}")]
    Unavailable(#[from] PoolError),
    #[error("database error: {0}")]
    Database(#[from] tokio_postgres::Error),
}

/// One outbox row, ready to produce.
#[derive(Debug, Clone)]
pub(crate) struct OutboxRow {
    pub(crate) id: i64,
    pub(crate) topic: String,
    pub(crate) key: Vec<u8>,
    pub(crate) payload: Vec<u8>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) created_at: SystemTime,
}

/// The rows waiting and the age of the oldest, in seconds; the rows quarantined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Backlog {
    pub(crate) rows: i64,
    pub(crate) oldest_age_seconds: f64,
    pub(crate) quarantined: i64,
}

#[derive(Debug, Clone)]
pub(crate) struct Store {
    pool: Pool,
}

impl Store {
    pub(crate) fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// The oldest `limit` rows of `shards`, in id order, leaving out the ids `produced`
    /// and the rows of the keys `held`.
    pub(crate) async fn read(
        &self,
        shards: &[i32],
        limit: usize,
        produced: &[i64],
        held: &[Vec<u8>],
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(include_str!("sql/read_batch.sql")).await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Plan with the actual shards and limit every time: a generic plan cached while
        // the table was small can stay on the connection long after it stopped being
        // good. Sent ahead of the query, without waiting for it (pipelined).
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&shards, &limit, &produced, &held];
        let (custom, rows) = futures::join!(
            client.batch_execute("SET plan_cache_mode = force_custom_plan"),
            client.query(&stmt, &params)
        );
        custom?;
        Ok(rows?
            .into_iter()
            .map(|row| OutboxRow {
                id: row.get(0),
                topic: row.get(1),
                key: row.get(2),
                payload: row.get(3),
                headers: headers(row.get(4)),
                created_at: row.get(5),
            })
            .collect())
    }

    /// Deletes the rows `ids` (acknowledged by the broker); returns how many were there.
    ///
    /// The delete commits without waiting for its WAL flush (`synchronous_commit = off`
    /// for this transaction only): if the database crashes before the flush, the rows
    /// come back and are published again, a duplicate and never a loss, and the relay
    /// does not wait a disk flush per batch.
    pub(crate) async fn clear(&self, ids: &[i64]) -> Result<u64, StoreError> {
        let (firsts, lasts) = runs(ids);
        let mut client = self.pool.get().await?;
        // Dense batches (one relay draining a backlog) clear as ranges; scattered ones
        // (several relays, interleaved ids) id by id.
        let dense = firsts.len() * 4 <= ids.len();
        let stmt = if dense {
            client.prepare_cached(include_str!("sql/clear_runs.sql")).await?
        } else {
            client.prepare_cached(include_str!("sql/clear.sql")).await?
        };
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL synchronous_commit = off").await?;
        let deleted = if dense {
            tx.execute(&stmt, &[&firsts, &lasts]).await?
        } else {
            tx.execute(&stmt, &[&ids]).await?
        };
        tx.commit().await?;
        Ok(deleted)
    }

    /// Moves row `id` to the quarantine with its `attempts` and `reason`; `false` when
    /// it was no longer in the outbox.
    pub(crate) async fn quarantine(&self, id: i64, attempts: u32, reason: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(include_str!("sql/quarantine_row.sql")).await?;
        let attempts = i32::try_from(attempts).unwrap_or(i32::MAX);
        Ok(!client.query(&stmt, &[&id, &attempts, &reason]).await?.is_empty())
    }

    pub(crate) async fn backlog(&self) -> Result<Backlog, StoreError> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(include_str!("sql/backlog.sql")).await?;
        let row = client.query_one(&stmt, &[]).await?;
        Ok(Backlog {
            rows: row.get(0),
            oldest_age_seconds: row.get::<_, Option<f64>>(1).unwrap_or(0.0),
            quarantined: row.get(2),
        })
    }
}

/// `ids` as maximal runs of consecutive integers: (first ids, last ids).
fn runs(ids: &[i64]) -> (Vec<i64>, Vec<i64>) {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let (mut firsts, mut lasts) = (Vec::new(), Vec::<i64>::new());
    for id in sorted {
        match lasts.last_mut() {
            Some(last) if *last + 1 == id => *last = id,
            _ => {
                firsts.push(id);
                lasts.push(id);
            }
        }
    }
    (firsts, lasts)
}

/// The stored headers object as name/value pairs; a non-string value is carried as its
/// JSON text rather than dropped.
fn headers(value: serde_json::Value) -> Vec<(String, String)> {
    match value {
        serde_json::Value::Object(map) => map
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_collapse_into_runs_of_consecutive_ids() {
        assert_eq!(runs(&[7, 3, 4, 5, 9, 8, 12, 4]), (vec![3, 7, 12], vec![5, 9, 12]));
        assert_eq!(runs(&[]), (vec![], vec![]));
    }

    #[test]
    fn headers_are_carried_as_strings() {
        let value = serde_json::json!({"traceparent": "00-abc-def-01", "attempt": 2});
        let mut pairs = headers(value);
        pairs.sort();
        assert_eq!(
            pairs,
            vec![("attempt".to_string(), "2".to_string()), ("traceparent".into(), "00-abc-def-01".into())]
        );
        assert!(headers(serde_json::Value::Null).is_empty());
    }
}
