SELECT key FROM consumer_held_keys WHERE consumer = $1
