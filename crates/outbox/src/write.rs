//! The writing side of the outbox: what a row is, which shard it goes to, how it is
//! inserted inside the writer's transaction, and the tables for a database of its own.

use std::collections::BTreeMap;

use deadpool_postgres::{GenericClient, Pool};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Number of outbox shards; part of the schema's contract with relays.
pub const OUTBOX_SHARDS: i32 = 64;

/// A record for the outbox, published by a relay as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Destination topic.
    pub topic: String,
    /// Record key; also decides the outbox shard.
    pub key: Vec<u8>,
    /// Record value.
    pub payload: Vec<u8>,
    /// Record headers (for example `traceparent`).
    pub headers: BTreeMap<String, String>,
}

/// The stable shard of an outbox key: FNV-1a over the bytes, modulo [`OUTBOX_SHARDS`].
pub fn outbox_shard(key: &[u8]) -> i32 {
    let hash = key.iter().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193));
    i32::try_from(hash % OUTBOX_SHARDS.unsigned_abs()).unwrap_or(0)
}

/// Inserts `messages` into the outbox with one statement, in their order, through
/// `client` (the writer's transaction: the rows commit with the writer's effect).
pub async fn write(
    client: &impl GenericClient,
    messages: &[&OutboxMessage],
) -> Result<(), tokio_postgres::Error> {
    if messages.is_empty() {
        return Ok(());
    }
    let shards: Vec<i32> = messages.iter().map(|m| outbox_shard(&m.key)).collect();
    let topics: Vec<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
    let keys: Vec<&[u8]> = messages.iter().map(|m| m.key.as_slice()).collect();
    let values: Vec<&[u8]> = messages.iter().map(|m| m.payload.as_slice()).collect();
    let headers: Vec<serde_json::Value> = messages.iter().map(|m| serde_json::json!(m.headers)).collect();
    let insert = client.prepare_cached(include_str!("sql/insert_outbox.sql")).await?;
    client.execute(&insert, &[&shards, &topics, &keys, &values, &headers]).await?;
    Ok(())
}

/// Creates the outbox tables in the database of `pool` when they are not there (a
/// service with an outbox of its own and no event store). Safe to run from several
/// processes at once; history in `orders_outbox_migrations`.
pub async fn migrate(pool: &Pool) -> Result<(), orders_postgres::MigrateError> {
    // A fixed lock key for "outbox migrations".
    let mut runner = embedded::migrations::runner();
    runner.set_migration_table_name("orders_outbox_migrations");
    orders_postgres::migrate(pool, 7401223003, &runner, "outbox").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_in_range() {
        let key = b"0190a0c4-8c8e-7e3a-9d2b-4a1f7e6c5b3a";
        assert_eq!(outbox_shard(key), outbox_shard(key));
        for i in 0u32..1000 {
            let shard = outbox_shard(&i.to_be_bytes());
            assert!((0..OUTBOX_SHARDS).contains(&shard));
        }
        assert_eq!(outbox_shard(b""), (0x811c_9dc5_u32 % 64) as i32);
    }
}
