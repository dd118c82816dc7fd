INSERT INTO events (stream_id, version, event_id, event_type, payload)
SELECT e.stream_id, e.version, e.event_id, e.event_type, e.payload
FROM unnest($1::UUID[], $2::BIGINT[], $3::UUID[], $4::TEXT[], $5::BYTEA[])
    AS e (stream_id, version, event_id, event_type, payload)
