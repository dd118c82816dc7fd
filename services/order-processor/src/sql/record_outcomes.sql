-- What the saga last did for each order of a group (one row each).
INSERT INTO saga_outcomes (order_id, outcome, detail)
SELECT order_id, outcome, detail FROM unnest($1::uuid[], $2::text[], $3::text[]) AS o (order_id, outcome, detail)
ON CONFLICT (order_id) DO UPDATE SET outcome = EXCLUDED.outcome, detail = EXCLUDED.detail, updated_at = now()
