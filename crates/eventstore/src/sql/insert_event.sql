INSERT INTO events (stream_id, version, event_id, event_type, payload)
SELECT $1, e.version, e.event_id, e.event_type, e.payload
FROM unnest($2::BIGINT[], $3::UUID[], $4::TEXT[], $5::BYTEA[]) AS e (version, event_id, event_type, payload)
