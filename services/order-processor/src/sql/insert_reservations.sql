INSERT INTO reservations (order_id, sku, quantity, state)
SELECT order_id, sku, quantity, 'reserved'
FROM unnest($1::uuid[], $2::text[], $3::bigint[]) AS r (order_id, sku, quantity)
