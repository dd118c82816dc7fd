//! Stored positions: reading them at assignment, and the compare-and-set that opens and
//! closes every batch transaction.

use std::collections::BTreeMap;

use deadpool_postgres::{GenericClient, Transaction};
use tokio_postgres::error::SqlState;

use crate::Result;

/// Where one projection's positions on one topic are kept.
#[derive(Debug, Clone)]
pub(crate) struct Positions {
    pub(crate) projection: String,
    pub(crate) topic: String,
}

/// How the compare-and-set of a batch ended.
#[derive(Debug)]
pub(crate) enum Claim {
    /// The stored position is the expected one; it is locked until the transaction ends.
    Held {
        /// Whether a row exists (update it) or not (insert one).
        exists: bool,
    },
    /// Another writer moved the position.
    Moved,
}

impl Positions {
    /// Every stored position (`next_offset` by partition).
    pub(crate) async fn load(&self, client: &impl GenericClient) -> Result<BTreeMap<i32, i64>> {
        let stmt = client.prepare_cached(include_str!("sql/load_positions.sql")).await?;
        let rows = client.query(&stmt, &[&self.projection, &self.topic]).await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// Locks the partition's position and compares it with `expected`.
    pub(crate) async fn claim(
        &self,
        tx: &Transaction<'_>,
        partition: i32,
        expected: Option<i64>,
    ) -> Result<Claim> {
        let stmt = tx.prepare_cached(include_str!("sql/lock_position.sql")).await?;
        let stored: Option<i64> =
            tx.query_opt(&stmt, &[&self.projection, &self.topic, &partition]).await?.map(|row| row.get(0));
        Ok(if stored == expected { Claim::Held { exists: stored.is_some() } } else { Claim::Moved })
    }

    /// Stores `next_offset` for the partition claimed with [`Positions::claim`]. Returns
    /// [`Claim::Moved`] when a concurrent writer inserted the first position first.
    pub(crate) async fn advance(
        &self,
        tx: &Transaction<'_>,
        partition: i32,
        exists: bool,
        next_offset: i64,
    ) -> Result<Claim> {
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&self.projection, &self.topic, &partition, &next_offset];
        if exists {
            let stmt = tx.prepare_cached(include_str!("sql/update_position.sql")).await?;
            tx.execute(&stmt, &params).await?;
            return Ok(Claim::Held { exists });
        }
        let stmt = tx.prepare_cached(include_str!("sql/insert_position.sql")).await?;
        match tx.execute(&stmt, &params).await {
            Ok(_) => Ok(Claim::Held { exists }),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(Claim::Moved),
            Err(e) => Err(e.into()),
        }
    }
}
