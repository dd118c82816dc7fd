-- GET /queries/users/{user_id}/windows: the user's windows that overlap [$2, $3)
-- (NULL: unbounded), newest first, at most $4 of them.
SELECT window_start, window_end, currency, order_count, paid_count, cancelled_count,
       revenue_minor, refunded_minor, final
FROM user_windows
WHERE user_id = $1
  AND ($2::timestamptz IS NULL OR window_end > $2)
  AND ($3::timestamptz IS NULL OR window_start < $3)
ORDER BY window_start DESC, window_end DESC, currency
LIMIT $4
