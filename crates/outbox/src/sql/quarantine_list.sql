-- The quarantined rows, oldest id first, at most `$1`, each with the number of rows of
-- its key waiting behind it in the outbox.
SELECT q.id, q.shard, q.topic, q.key, length(q.payload)::BIGINT, q.headers, q.created_at,
       q.quarantined_at, q.attempts, q.reason,
       (SELECT count(*) FROM outbox AS o WHERE o.shard = q.shard AND o.key = q.key) AS waiting
FROM outbox_quarantine AS q
ORDER BY q.id
LIMIT $1
