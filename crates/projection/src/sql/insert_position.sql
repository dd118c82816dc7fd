-- The first position of a partition; fails with a unique violation when another writer
-- stored one concurrently (the batch is then rolled back and the position reloaded).
INSERT INTO consumer_positions (projection, topic, partition, next_offset)
VALUES ($1, $2, $3, $4)
