INSERT INTO reservations (order_id, sku, quantity, state) VALUES ($1, $2, $3, 'reserved')
