-- The lines the group's orders ($1) hold reserved, locked.
SELECT order_id, sku, quantity FROM reservations
WHERE order_id = ANY($1::uuid[]) AND state = 'reserved'
ORDER BY order_id, sku
FOR UPDATE
