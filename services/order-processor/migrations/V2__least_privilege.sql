-- Least privilege (scheme: the orders-eventstore crate's V4): the role without login
-- orders_saga carries what the order processor needs of the saga's tables and reads
-- this migration history; its login role is also a member of orders_consumer (the
-- consumer's tables), orders_outbox_writer and orders_outbox_relay (its commands'
-- outbox, and the relay that publishes it). Created when missing (needs CREATEROLE).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_saga') THEN
        CREATE ROLE orders_saga NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- created meanwhile by a concurrent migration of another database
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON inventory, reservations, shipments, saga_outcomes TO orders_saga;
GRANT SELECT ON refinery_schema_history TO orders_saga;
