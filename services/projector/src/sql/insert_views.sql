-- New order views, one array per column (binary parameters: nothing to parse).
INSERT INTO order_views (
    order_id, user_id, status, currency, total_minor, items, payment_id, amount_paid_minor,
    shipment_id, tracking_number, cancel_reason, created_at, updated_at, paid_at, shipped_at,
    cancelled_at, version, missing_version
)
SELECT *
FROM unnest(
    $1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[], $7::text[],
    $8::bigint[], $9::text[], $10::text[], $11::text[], $12::timestamptz[], $13::timestamptz[],
    $14::timestamptz[], $15::timestamptz[], $16::timestamptz[], $17::bigint[], $18::bigint[]
)
