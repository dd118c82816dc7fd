SELECT request_hash, status, response
FROM idempotency_records
WHERE key = $1 AND expires_at > now()
