-- Parks events that arrived after a version gap, one array per column. A record parked
-- again (re-delivered) keeps its first row.
INSERT INTO parked_events (order_id, version, event_type, partition, "offset", record_timestamp, payload)
SELECT *
FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::integer[], $5::bigint[], $6::timestamptz[], $7::bytea[])
ON CONFLICT (order_id, version) DO NOTHING
