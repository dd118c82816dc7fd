-- The outbox backlog: rows waiting and the age of the oldest, in seconds.
SELECT count(*), EXTRACT(EPOCH FROM clock_timestamp() - min(created_at))::DOUBLE PRECISION
FROM outbox
