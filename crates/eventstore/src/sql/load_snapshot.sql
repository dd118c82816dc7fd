SELECT version, state FROM snapshots WHERE stream_id = $1
