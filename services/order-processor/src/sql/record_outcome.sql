INSERT INTO saga_outcomes (order_id, outcome, detail) VALUES ($1, $2, $3)
ON CONFLICT (order_id) DO UPDATE SET outcome = EXCLUDED.outcome, detail = EXCLUDED.detail, updated_at = now()
