-- Advances a partition's position, in the transaction of the batch it follows.
UPDATE consumer_positions
SET next_offset = $4, updated_at = now()
WHERE projection = $1 AND topic = $2 AND partition = $3
