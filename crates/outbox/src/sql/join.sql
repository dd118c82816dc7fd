-- Membership: a shared lock held for the life of the session; the number of holders is
-- the number of live relays.
SELECT pg_advisory_lock_shared($1::INTEGER, $2::INTEGER)
