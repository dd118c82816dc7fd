-- As insert_idempotency.sql, for many records; the caller compares the row count.
INSERT INTO idempotency_records (key, request_hash, status, response, expires_at)
SELECT r.key, r.request_hash, r.status, r.response, now() + make_interval(secs => r.ttl)
FROM unnest($1::TEXT[], $2::BYTEA[], $3::INTEGER[], $4::JSONB[], $5::FLOAT8[])
    AS r (key, request_hash, status, response, ttl)
-- In one order for every transaction (see insert_events_batch.sql).
ORDER BY r.key
ON CONFLICT (key) DO UPDATE
SET request_hash = EXCLUDED.request_hash, status = EXCLUDED.status, response = EXCLUDED.response,
    created_at = now(), expires_at = EXCLUDED.expires_at
WHERE idempotency_records.expires_at <= now()
