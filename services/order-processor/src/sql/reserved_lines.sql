SELECT sku, quantity FROM reservations WHERE order_id = $1 AND state = 'reserved' ORDER BY sku FOR UPDATE
