-- Least privilege (the event store's V4 explains the scheme): roles without login for
--   orders_outbox_writer  adds rows to the outbox, in the writer's own transactions;
--   orders_outbox_relay   reads and deletes them, sets them aside in the quarantine and
--                         back.
-- Both read this crate's migration history. Created when missing (needs CREATEROLE).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_outbox_writer') THEN
        CREATE ROLE orders_outbox_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_outbox_relay') THEN
        CREATE ROLE orders_outbox_relay NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- created meanwhile by a concurrent migration of another database
END
$$;

GRANT INSERT ON outbox TO orders_outbox_writer;
GRANT SELECT, INSERT, DELETE ON outbox TO orders_outbox_relay;
GRANT SELECT, INSERT, DELETE ON outbox_quarantine TO orders_outbox_relay;
GRANT SELECT ON orders_outbox_migrations TO orders_outbox_writer, orders_outbox_relay;
