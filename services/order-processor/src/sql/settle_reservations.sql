-- Reservations leaving 'reserved': 'shipped' (the units left) or 'released' (they are
-- available again).
UPDATE reservations AS r SET state = s.state, updated_at = now()
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS s (order_id, sku, state)
WHERE r.order_id = s.order_id AND r.sku = s.sku AND r.state = 'reserved'
