-- Sets the row `$1` aside: moves it from the outbox to the quarantine with its number of
-- attempts `$2` and the reason `$3`, in one statement. Nothing happens when the row is
-- gone (another relay published it meanwhile). Returns the id when it moved.
WITH moved AS (
    DELETE FROM outbox WHERE id = $1::BIGINT
    RETURNING id, shard, topic, key, payload, headers, created_at
)
INSERT INTO outbox_quarantine (id, shard, topic, key, payload, headers, created_at, attempts, reason)
SELECT id, shard, topic, key, payload, headers, created_at, $2::INTEGER, $3::TEXT FROM moved
RETURNING id
