INSERT INTO consumer_dead_letters
    (consumer, topic, partition, "offset", key, payload, header_names, header_values, timestamp_ms, reason, attempts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (consumer, topic, partition, "offset") DO NOTHING
