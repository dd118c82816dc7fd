-- For `?min_version=` on an unknown order: how many partitions have a clock, and how many
-- of them are at or past $1 (the order's creation time plus a margin).
SELECT count(*)::bigint AS partitions,
       count(*) FILTER (WHERE occurred_to >= $1)::bigint AS past
FROM partition_clock
