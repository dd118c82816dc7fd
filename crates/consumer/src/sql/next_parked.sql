SELECT id, topic, partition, "offset", key, payload, header_names, header_values, timestamp_ms
FROM consumer_parked WHERE consumer = $1 AND key = $2 ORDER BY id LIMIT 1
