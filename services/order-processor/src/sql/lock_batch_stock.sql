-- Every tracked SKU a group of steps may change, locked in SKU order before the first
-- step: the SKUs of the created orders ($1) and those still reserved by the orders
-- shipped or cancelled ($2). Two groups then never wait for each other in a cycle.
SELECT sku FROM inventory
WHERE sku = ANY($1)
   OR sku IN (SELECT sku FROM reservations WHERE order_id = ANY($2) AND state = 'reserved')
ORDER BY sku
FOR UPDATE
