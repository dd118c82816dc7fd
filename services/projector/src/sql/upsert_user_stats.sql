-- Adds per-user, per-currency deltas (model::StatsDelta) to the rows of the batch's
-- partition ($1): no other transaction writes those rows.
INSERT INTO user_stats AS s (
    user_id, currency, partition, order_count, pending_count, paid_count, shipped_count,
    cancelled_count, spent_minor
)
SELECT r.user_id, r.currency, $1, r.order_count, r.pending_count, r.paid_count, r.shipped_count,
       r.cancelled_count, r.spent_minor
FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[],
            $9::bigint[]) AS r (user_id, currency, order_count, pending_count, paid_count, shipped_count,
                                cancelled_count, spent_minor)
ON CONFLICT (user_id, currency, partition) DO UPDATE
SET order_count     = s.order_count + EXCLUDED.order_count,
    pending_count   = s.pending_count + EXCLUDED.pending_count,
    paid_count      = s.paid_count + EXCLUDED.paid_count,
    shipped_count   = s.shipped_count + EXCLUDED.shipped_count,
    cancelled_count = s.cancelled_count + EXCLUDED.cancelled_count,
    spent_minor     = s.spent_minor + EXCLUDED.spent_minor
