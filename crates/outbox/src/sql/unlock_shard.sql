-- Hands a shard back.
SELECT pg_advisory_unlock($1::INTEGER, $2::INTEGER)
