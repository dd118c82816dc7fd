-- GET /queries/orders/{id}
SELECT order_id, user_id, status, currency, total_minor, items, payment_id, amount_paid_minor,
       shipment_id, tracking_number, cancel_reason, created_at, updated_at, paid_at, shipped_at,
       cancelled_at, version, missing_version,
       ARRAY(SELECT p.version FROM parked_events AS p WHERE p.order_id = $1 ORDER BY p.version)
           AS parked_versions
FROM order_views
WHERE order_id = $1
