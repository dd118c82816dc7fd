-- The outbox's tables, for a database that writes an outbox without the event store
-- (whose own migrations create the same tables in its database: there these
-- statements find them and do nothing). The columns are the contract with relays;
-- see the crate docs.
CREATE TABLE IF NOT EXISTS outbox (
    id         BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shard      INTEGER     NOT NULL,
    topic      TEXT        NOT NULL,
    key        BYTEA       NOT NULL,
    payload    BYTEA       NOT NULL,
    headers    JSONB       NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS outbox_shard_id ON outbox (shard, id);
-- A queue: vacuum after a fixed number of dead rows (see the event store's V2).
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 10000
);
CREATE TABLE IF NOT EXISTS outbox_quarantine (
    id             BIGINT      PRIMARY KEY,
    shard          INTEGER     NOT NULL,
    topic          TEXT        NOT NULL,
    key            BYTEA       NOT NULL,
    payload        BYTEA       NOT NULL,
    headers        JSONB       NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    quarantined_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    attempts       INTEGER     NOT NULL,
    reason         TEXT        NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_quarantine_shard_key ON outbox_quarantine (shard, key);
