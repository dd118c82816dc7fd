-- GET /queries/users/{user_id}/orders: the user's order count and one page of orders,
-- newest first (ties broken by order id, so pages are stable), in one snapshot. No row:
-- the user is unknown; one row with a NULL order_id: the page is past the end.
WITH total AS (
    SELECT sum(order_count)::bigint AS order_count FROM user_stats WHERE user_id = $1
)
SELECT t.order_count, o.order_id, o.status, o.currency, o.total_minor, o.created_at, o.updated_at,
       o.version
FROM total AS t
LEFT JOIN LATERAL (
    SELECT order_id, status, currency, total_minor, created_at, updated_at, version
    FROM order_views
    WHERE user_id = $1
    ORDER BY created_at DESC, order_id DESC
    LIMIT $2 OFFSET $3
) AS o ON true
WHERE t.order_count IS NOT NULL
ORDER BY o.created_at DESC, o.order_id DESC
