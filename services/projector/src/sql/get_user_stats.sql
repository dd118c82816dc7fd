-- GET /queries/users/{user_id}/stats: the user's statistics in each currency (summed over
-- the partition shards).
SELECT currency, sum(order_count)::bigint AS order_count, sum(pending_count)::bigint AS pending_count,
       sum(paid_count)::bigint AS paid_count, sum(shipped_count)::bigint AS shipped_count,
       sum(cancelled_count)::bigint AS cancelled_count, sum(spent_minor)::bigint AS spent_minor
FROM user_stats
WHERE user_id = $1
GROUP BY currency
ORDER BY currency
