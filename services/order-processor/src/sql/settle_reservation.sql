-- $3: 'shipped' (reserved units leave) or 'released' (they are available again).
UPDATE reservations SET state = $3, updated_at = now() WHERE order_id = $1 AND sku = $2 AND state = 'reserved'
