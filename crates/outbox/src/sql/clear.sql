-- Clears rows whose publication the broker acknowledged.
DELETE FROM outbox WHERE id = ANY($1::BIGINT[])
