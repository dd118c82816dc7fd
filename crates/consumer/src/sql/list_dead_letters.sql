-- $2: only these ids (NULL: all); $3: only this key (NULL: any); $4: reason contains (NULL: any).
SELECT id, topic, partition, "offset", key, payload, header_names, header_values, timestamp_ms,
       reason, attempts, dead_lettered_at,
       (SELECT count(*) FROM consumer_parked p WHERE p.consumer = d.consumer AND p.key = d.key) AS parked
FROM consumer_dead_letters d
WHERE consumer = $1
  AND ($2::BIGINT[] IS NULL OR id = ANY($2))
  AND ($3::BYTEA IS NULL OR key = $3)
  AND ($4::TEXT IS NULL OR strpos(reason, $4) > 0)
ORDER BY id
LIMIT $5
