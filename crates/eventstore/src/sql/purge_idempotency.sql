DELETE FROM idempotency_records WHERE expires_at <= now()
