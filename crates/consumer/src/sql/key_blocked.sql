-- Whether anything still holds the key: a dead letter or a parked record.
SELECT EXISTS (SELECT 1 FROM consumer_dead_letters WHERE consumer = $1 AND key = $2)
    OR EXISTS (SELECT 1 FROM consumer_parked WHERE consumer = $1 AND key = $2)
