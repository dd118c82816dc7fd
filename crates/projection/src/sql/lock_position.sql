-- The first statement of every batch transaction: reads the partition's stored position
-- and locks it until commit, so that two writers of one partition serialize here, and a
-- read-model swap (LOCK TABLE consumer_positions) waits for the batch in flight.
SELECT next_offset
FROM consumer_positions
WHERE projection = $1 AND topic = $2 AND partition = $3
FOR UPDATE
