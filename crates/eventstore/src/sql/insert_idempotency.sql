-- Inserts a record, or replaces one that has expired; a live record with the same
-- key stays, and the statement affects no row.
INSERT INTO idempotency_records (key, request_hash, status, response, expires_at)
VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
ON CONFLICT (key) DO UPDATE
SET request_hash = EXCLUDED.request_hash, status = EXCLUDED.status, response = EXCLUDED.response,
    created_at = now(), expires_at = EXCLUDED.expires_at
WHERE idempotency_records.expires_at <= now()
