UPDATE consumer_dead_letters SET reason = $3, attempts = attempts + $4 WHERE consumer = $1 AND id = $2
