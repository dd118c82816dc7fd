-- The gap gauges: parked events, orders waiting for a missing version, and the age of the
-- oldest parked record (from its timestamp in the topic).
SELECT count(*)::bigint AS events,
       count(DISTINCT order_id)::bigint AS orders,
       COALESCE(EXTRACT(EPOCH FROM now() - min(record_timestamp)), 0)::float8 AS oldest_seconds
FROM parked_events
