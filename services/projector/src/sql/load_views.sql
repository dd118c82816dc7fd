-- The current state of the orders a batch touches.
SELECT order_id, version, user_id, status, currency, total_minor, amount_paid_minor, missing_version
FROM order_views
WHERE order_id = ANY($1)
