-- Outbox rows a relay could not publish after its attempts (the topic does not exist,
-- the broker refuses the record): set aside with the reason, so that the rest of their
-- shard goes on. Relays leave the later rows of a quarantined row's key (same shard,
-- same key) in the outbox until the row is re-queued (put back in the outbox with its
-- own id, so it goes first again) or discarded. The columns are the outbox's, plus
-- why and when.
CREATE TABLE outbox_quarantine (
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
CREATE INDEX outbox_quarantine_shard_key ON outbox_quarantine (shard, key);
