-- Stores the latest record of each window of a batch (windows::Windows: one row per
-- key, the batch's last record of it): a window's row is replaced by a later record of
-- the same partition, never by an earlier one (a replay changes nothing).
INSERT INTO user_windows AS w (
    user_id, window_start, window_end, currency, order_count, paid_count, cancelled_count,
    revenue_minor, refunded_minor, final, source_partition, source_offset
)
SELECT r.user_id, r.window_start, r.window_end, r.currency, r.order_count, r.paid_count,
       r.cancelled_count, r.revenue_minor, r.refunded_minor, r.final, $1, r.source_offset
FROM unnest($2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[], $6::bigint[], $7::bigint[],
            $8::bigint[], $9::bigint[], $10::bigint[], $11::boolean[], $12::bigint[])
     AS r (user_id, window_start, window_end, currency, order_count, paid_count, cancelled_count,
           revenue_minor, refunded_minor, final, source_offset)
ON CONFLICT (user_id, window_start, window_end, currency) DO UPDATE
SET order_count      = EXCLUDED.order_count,
    paid_count       = EXCLUDED.paid_count,
    cancelled_count  = EXCLUDED.cancelled_count,
    revenue_minor    = EXCLUDED.revenue_minor,
    refunded_minor   = EXCLUDED.refunded_minor,
    final            = EXCLUDED.final,
    source_partition = EXCLUDED.source_partition,
    source_offset    = EXCLUDED.source_offset,
    updated_at       = now()
WHERE w.source_partition <> EXCLUDED.source_partition OR w.source_offset < EXCLUDED.source_offset
