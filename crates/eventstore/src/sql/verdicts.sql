-- Why the appends of a failed shared transaction failed: one row per append, in the
-- order given. `committed`: its first event is stored (an earlier try committed, for
-- example one whose answer was lost); `version_taken`: another writer holds its
-- first version; `key_taken`: a live record holds its idempotency key.
SELECT
    EXISTS (
        SELECT 1 FROM events e
        WHERE e.event_id = a.event_id AND e.stream_id = a.stream_id AND e.version = a.version
    ) AS committed,
    EXISTS (
        SELECT 1 FROM events e WHERE e.stream_id = a.stream_id AND e.version = a.version
    ) AS version_taken,
    a.key IS NOT NULL AND EXISTS (
        SELECT 1 FROM idempotency_records r WHERE r.key = a.key AND r.expires_at > now()
    ) AS key_taken
FROM unnest($1::UUID[], $2::UUID[], $3::BIGINT[], $4::TEXT[]) WITH ORDINALITY
    AS a (event_id, stream_id, version, key, n)
ORDER BY a.n
