DELETE FROM consumer_parked WHERE consumer = $1 AND id = $2
