-- The available units of every tracked SKU a group of steps may change, locked in SKU
-- order before its first step: the SKUs of the created orders ($1) and those still
-- reserved by the orders shipped or cancelled ($2). Two groups never wait for each
-- other in a cycle.
SELECT sku, available FROM inventory
WHERE sku = ANY($1::text[] || ARRAY(
    SELECT sku FROM reservations WHERE order_id = ANY($2::uuid[]) AND state = 'reserved'
))
ORDER BY sku
FOR UPDATE
