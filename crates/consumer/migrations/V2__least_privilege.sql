-- Least privilege (scheme: the orders-eventstore crate's V4): the role without login
-- orders_consumer carries what a consumer needs of its tables (the inbox of handled
-- ids, dead letters, held keys, parked records) and this crate's migration history;
-- a deployment makes its service's login role a member. Created when missing (needs
-- CREATEROLE).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_consumer') THEN
        CREATE ROLE orders_consumer NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- created meanwhile by a concurrent migration of another database
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE
    ON consumer_inbox, consumer_dead_letters, consumer_held_keys, consumer_parked
    TO orders_consumer;
GRANT SELECT ON orders_consumer_migrations TO orders_consumer;
