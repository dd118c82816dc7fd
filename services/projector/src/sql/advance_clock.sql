-- Moves the batch's partition's clock to the latest event time of the batch (never back).
INSERT INTO partition_clock AS c (partition, occurred_to)
VALUES ($1, $2)
ON CONFLICT (partition) DO UPDATE
SET occurred_to = GREATEST(c.occurred_to, EXCLUDED.occurred_to)
WHERE EXCLUDED.occurred_to > c.occurred_to
