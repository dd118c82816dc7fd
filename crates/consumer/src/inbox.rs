//! Effects once: the inbox of handled record ids.
//!
//! Kafka delivers at least once, and the consumer handles a record again after a
//! crash, a rebalance or a replay. A handler that writes its effect to PostgreSQL calls
//! [`claim`] in the effect's transaction first: the first claim of an id inserts it and
//! answers `true` (go on), every later one answers `false` (the effect is there: commit
//! nothing new and return `Ok`). Both commit or neither does, so an effect is never
//! applied twice and never lost.
//!
//! A handler that applies the effects of several records in one transaction claims
//! their ids at once with [`claim_all`].
//!
//! The table is `consumer_inbox`, created by [`crate::Store::migrate`].

use std::collections::HashSet;

use deadpool_postgres::GenericClient;

use crate::Result;

/// Claims `id` (an event id: unique per effect) for `consumer` inside the caller's
/// transaction. `true`: first time, apply the effect; `false`: already applied.
pub async fn claim(client: &impl GenericClient, consumer: &str, id: &str) -> Result<bool> {
    let statement = client.prepare_cached(include_str!("sql/inbox_claim.sql")).await?;
    Ok(client.execute(&statement, &[&consumer, &id]).await? == 1)
}

/// Claims every id of `ids` for `consumer` inside the caller's transaction, with one
/// statement; answers the ids claimed now (first time: apply their effects). An id
/// given twice is claimed once: apply its effect once. The ids are claimed in their
/// sort order, so two transactions claiming overlapping sets wait for each other
/// instead of deadlocking.
pub async fn claim_all(client: &impl GenericClient, consumer: &str, ids: &[&str]) -> Result<HashSet<String>> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    let statement = client.prepare_cached(include_str!("sql/inbox_claim_all.sql")).await?;
    let rows = client.query(&statement, &[&consumer, &ids]).await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}
