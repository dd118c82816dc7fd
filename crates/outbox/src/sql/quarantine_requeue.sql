-- Puts quarantined rows back in the outbox (the ids `$1`, or all of them when `$2`),
-- with their own ids: a row goes before the later rows of its key that waited behind
-- it, since those have larger ids. One statement: no read sees the key with neither the
-- row nor its quarantine. Returns the ids re-queued.
WITH moved AS (
    DELETE FROM outbox_quarantine WHERE $2::BOOLEAN OR id = ANY($1::BIGINT[])
    RETURNING id, shard, topic, key, payload, headers, created_at
)
INSERT INTO outbox (id, shard, topic, key, payload, headers, created_at)
OVERRIDING SYSTEM VALUE
SELECT id, shard, topic, key, payload, headers, created_at FROM moved
RETURNING id
