SELECT version, event_id, event_type, payload, recorded_at
FROM events
WHERE stream_id = $1 AND version > $2
ORDER BY version
