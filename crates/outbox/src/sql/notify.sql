-- Wakes the relays listening on channel `$1`.
SELECT pg_notify($1::TEXT, '')
