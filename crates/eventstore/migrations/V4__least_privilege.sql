-- Least privilege. Two roles without login carry what each kind of client needs, and
-- nothing more; a deployment makes its services' login roles members of them (see the
-- repository's README, "Security"), while the schema stays the owner's, who alone runs
-- these migrations (no DDL for the services):
--   orders_eventstore_writer  appends events, snapshots, outbox rows and idempotency
--                             records, reads them back, purges expired records;
--   orders_outbox_relay       reads and deletes outbox rows, sets them aside in the
--                             quarantine and back (a relay, see the orders-outbox crate).
-- Both read the migration history (a service starts once the owner has migrated). The
-- roles are created when missing, which needs CREATEROLE; a DBA may create them first.
-- The same roles serve every database of the cluster: what a login role may reach is
-- bounded by the databases it may CONNECT to.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_eventstore_writer') THEN
        CREATE ROLE orders_eventstore_writer NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_outbox_relay') THEN
        CREATE ROLE orders_outbox_relay NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- created meanwhile by a concurrent migration of another database
END
$$;

GRANT SELECT, INSERT ON events TO orders_eventstore_writer;
GRANT SELECT, INSERT, UPDATE ON snapshots TO orders_eventstore_writer;
GRANT INSERT ON outbox TO orders_eventstore_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON idempotency_records TO orders_eventstore_writer;

GRANT SELECT, INSERT, DELETE ON outbox TO orders_outbox_relay;
GRANT SELECT, INSERT, DELETE ON outbox_quarantine TO orders_outbox_relay;

GRANT SELECT ON refinery_schema_history TO orders_eventstore_writer, orders_outbox_relay;
