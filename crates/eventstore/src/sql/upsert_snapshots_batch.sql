INSERT INTO snapshots (stream_id, version, state)
SELECT s.stream_id, s.version, s.state
FROM unnest($1::UUID[], $2::BIGINT[], $3::BYTEA[]) AS s (stream_id, version, state)
-- In one order for every transaction (see insert_events_batch.sql).
ORDER BY s.stream_id
ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, state = EXCLUDED.state, taken_at = now()
WHERE snapshots.version < EXCLUDED.version
