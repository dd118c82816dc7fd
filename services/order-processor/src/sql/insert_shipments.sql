INSERT INTO shipments (order_id, shipment_id, tracking_number)
SELECT order_id, shipment_id, tracking_number
FROM unnest($1::uuid[], $2::text[], $3::text[]) AS s (order_id, shipment_id, tracking_number)
ON CONFLICT (order_id) DO NOTHING
