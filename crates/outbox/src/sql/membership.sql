-- Who holds what, from the lock table of this database: how many relays are members
-- (shared locks on ($1, $2)) and which shards are owned by any relay (exclusive locks on
-- ($1, shard) with shard < $2). Advisory locks taken with two int4 keys show in pg_locks
-- as classid = key 1, objid = key 2, objsubid = 2.
SELECT
    count(*) FILTER (WHERE objid::BIGINT = $2::BIGINT)::INTEGER AS members,
    coalesce(array_agg(objid::BIGINT::INTEGER) FILTER (WHERE objid::BIGINT < $2::BIGINT), '{}') AS held
FROM pg_locks
WHERE locktype = 'advisory'
  AND granted
  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND classid::BIGINT = $1::BIGINT
  AND objsubid = 2
