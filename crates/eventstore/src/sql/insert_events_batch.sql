INSERT INTO events (stream_id, version, event_id, event_type, payload)
SELECT e.stream_id, e.version, e.event_id, e.event_type, e.payload
FROM unnest($1::UUID[], $2::BIGINT[], $3::UUID[], $4::TEXT[], $5::BYTEA[])
    AS e (stream_id, version, event_id, event_type, payload)
-- In one order for every transaction, so that two of them over the same streams wait
-- on each other's rows in turn instead of deadlocking.
ORDER BY e.stream_id, e.version
