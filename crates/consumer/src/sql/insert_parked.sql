INSERT INTO consumer_parked
    (consumer, topic, partition, "offset", key, payload, header_names, header_values, timestamp_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (consumer, topic, partition, "offset") DO NOTHING
