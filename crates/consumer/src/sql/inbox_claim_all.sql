INSERT INTO consumer_inbox (consumer, id) SELECT $1, id FROM unnest($2::text[]) AS claimed (id)
ON CONFLICT DO NOTHING
RETURNING id
