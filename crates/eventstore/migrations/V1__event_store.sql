-- The event store: one row per event, one stream per aggregate instance.
-- (stream_id, version) is the optimistic-concurrency guard: appending a version
-- that exists fails with a unique violation, never overwrites.
CREATE TABLE events (
    stream_id   UUID        NOT NULL,
    version     BIGINT      NOT NULL CHECK (version > 0),
    event_id    UUID        NOT NULL,
    event_type  TEXT        NOT NULL,
    payload     BYTEA       NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, version),
    UNIQUE (event_id)
);

-- The latest snapshot of a stream: its state at `version`, so that loading reads
-- the snapshot plus the events after it instead of the whole history.
CREATE TABLE snapshots (
    stream_id UUID        PRIMARY KEY,
    version   BIGINT      NOT NULL CHECK (version > 0),
    state     BYTEA       NOT NULL,
    taken_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The transactional outbox: written in the same transaction as the events,
-- published and deleted by a relay. `shard` (a stable hash of the key) lets
-- several relays split the work while each key stays with one relay at a time,
-- so that one key's messages are published in `id` order.
CREATE TABLE outbox (
    id         BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    shard      INTEGER     NOT NULL,
    topic      TEXT        NOT NULL,
    key        BYTEA       NOT NULL,
    payload    BYTEA       NOT NULL,
    headers    JSONB       NOT NULL DEFAULT '{}',
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX outbox_shard_id ON outbox (shard, id);

-- Answers to requests that carried an idempotency key (or to commands with an
-- id), stored in the same transaction as their effect: a retry replays the answer.
CREATE TABLE idempotency_records (
    key          TEXT        PRIMARY KEY,
    request_hash BYTEA       NOT NULL,
    status       INTEGER     NOT NULL,
    response     JSONB       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX idempotency_records_expires_at ON idempotency_records (expires_at);
