-- The parked events of the orders a batch touches, by order and version.
SELECT order_id, version, payload
FROM parked_events
WHERE order_id = ANY($1)
ORDER BY order_id, version
