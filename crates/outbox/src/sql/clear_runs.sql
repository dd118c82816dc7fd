-- Clears rows whose publication the broker acknowledged, given as runs of consecutive
-- ids [$1[i], $2[i]]: every id of a run was acknowledged, so the range holds no other
-- row (ids are unique). Used when a batch is a few dense stretches of the outbox: a
-- few index range scans instead of one probe per row.
DELETE FROM outbox
USING unnest($1::BIGINT[], $2::BIGINT[]) AS run (first_id, last_id)
WHERE outbox.id BETWEEN run.first_id AND run.last_id
