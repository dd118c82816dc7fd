-- Changed order views, one array per column. Only a row still at the version the batch
-- read is changed: the caller checks that every row was.
UPDATE order_views AS v
SET status            = r.status,
    version           = r.version,
    updated_at        = COALESCE(r.updated_at, v.updated_at),
    payment_id        = COALESCE(r.payment_id, v.payment_id),
    amount_paid_minor = COALESCE(r.amount_paid_minor, v.amount_paid_minor),
    paid_at           = COALESCE(r.paid_at, v.paid_at),
    shipment_id       = COALESCE(r.shipment_id, v.shipment_id),
    tracking_number   = COALESCE(r.tracking_number, v.tracking_number),
    shipped_at        = COALESCE(r.shipped_at, v.shipped_at),
    cancel_reason     = COALESCE(r.cancel_reason, v.cancel_reason),
    cancelled_at      = COALESCE(r.cancelled_at, v.cancelled_at),
    missing_version   = r.missing_version
FROM unnest(
    $1::uuid[], $2::bigint[], $3::text[], $4::bigint[], $5::timestamptz[], $6::text[], $7::bigint[],
    $8::timestamptz[], $9::text[], $10::text[], $11::timestamptz[], $12::text[], $13::timestamptz[],
    $14::bigint[]
) AS r (
    order_id, prev_version, status, version, updated_at, payment_id, amount_paid_minor, paid_at,
    shipment_id, tracking_number, shipped_at, cancel_reason, cancelled_at, missing_version
)
WHERE v.order_id = r.order_id AND v.version = r.prev_version
