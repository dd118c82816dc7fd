INSERT INTO shipments (order_id, shipment_id, tracking_number) VALUES ($1, $2, $3)
ON CONFLICT (order_id) DO NOTHING
