DELETE FROM consumer_dead_letters WHERE consumer = $1 AND id = $2
