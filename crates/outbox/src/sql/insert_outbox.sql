INSERT INTO outbox (shard, topic, key, payload, headers)
SELECT o.shard, o.topic, o.key, o.payload, o.headers
FROM unnest($1::INTEGER[], $2::TEXT[], $3::BYTEA[], $4::BYTEA[], $5::JSONB[]) AS o (shard, topic, key, payload, headers)
