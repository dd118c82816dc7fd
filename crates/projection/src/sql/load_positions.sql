-- Every stored position of one projection on one topic.
SELECT partition, next_offset
FROM consumer_positions
WHERE projection = $1 AND topic = $2
