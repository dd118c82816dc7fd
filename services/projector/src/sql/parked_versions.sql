-- GET /queries/orders/{id}: the versions of the order waiting for a missing one.
SELECT version
FROM parked_events
WHERE order_id = $1
ORDER BY version
