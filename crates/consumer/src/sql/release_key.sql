DELETE FROM consumer_held_keys WHERE consumer = $1 AND key = $2
