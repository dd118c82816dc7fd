-- Parked events the batch applied (their gap closed).
DELETE FROM parked_events AS p
USING unnest($1::uuid[], $2::bigint[]) AS r (order_id, version)
WHERE p.order_id = r.order_id AND p.version = r.version
