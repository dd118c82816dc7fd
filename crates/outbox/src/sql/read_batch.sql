-- The oldest `$2` rows of the shards `$1`, in id order, leaving out the ids `$3` (rows
-- of the previous batch, produced but not cleared yet), the rows of the keys `$4` (held
-- back by the worker while a row of theirs waits for its next attempt) and the rows of
-- keys that have a quarantined row (they wait behind it until it is re-queued or
-- discarded). No "last id
-- seen" cursor: a row stays in the table until it is acknowledged by the broker and
-- deleted, so a row that committed late with a small id is found by the next read. The
-- result is a prefix (in id order) of each shard's remaining rows not yet produced,
-- per key not held back nor quarantined, which is what keeps one key in order. (NOT EXISTS over
-- unnest plans as a merge anti-join, cheap whatever the size of `$3`, where
-- `id <> ALL($3)` compares every row with every id; the quarantine is almost always
-- empty, and probed by its (shard, key) index otherwise.)
SELECT o.id, o.topic, o.key, o.payload, o.headers, o.created_at
FROM outbox AS o
WHERE o.shard = ANY($1::INTEGER[])
  AND NOT EXISTS (SELECT FROM unnest($3::BIGINT[]) AS produced (id) WHERE produced.id = o.id)
  AND NOT EXISTS (SELECT FROM unnest($4::BYTEA[]) AS held (key) WHERE held.key = o.key)
  AND NOT EXISTS (SELECT FROM outbox_quarantine AS q WHERE q.shard = o.shard AND q.key = o.key)
ORDER BY o.id
LIMIT $2
