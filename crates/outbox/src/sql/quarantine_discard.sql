-- Drops quarantined rows for good (the ids `$1`, or all of them when `$2`): the later
-- rows of their keys go on. Returns the ids discarded.
DELETE FROM outbox_quarantine WHERE $2::BOOLEAN OR id = ANY($1::BIGINT[])
RETURNING id
