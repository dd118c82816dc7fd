INSERT INTO consumer_held_keys (consumer, key) VALUES ($1, $2) ON CONFLICT DO NOTHING
