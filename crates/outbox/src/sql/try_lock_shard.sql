-- Takes a shard if no other session holds it; never waits.
SELECT pg_try_advisory_lock($1::INTEGER, $2::INTEGER)
