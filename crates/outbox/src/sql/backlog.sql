-- The outbox backlog: rows waiting and the age of the oldest, in seconds; and the rows
-- set aside in the quarantine.
SELECT count(*), EXTRACT(EPOCH FROM clock_timestamp() - min(created_at))::DOUBLE PRECISION,
       (SELECT count(*) FROM outbox_quarantine)
FROM outbox
