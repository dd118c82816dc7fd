INSERT INTO snapshots (stream_id, version, state)
VALUES ($1, $2, $3)
ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, state = EXCLUDED.state, taken_at = now()
WHERE snapshots.version < EXCLUDED.version
