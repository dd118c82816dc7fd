-- The tables of the reliable consumer (crate orders-consumer), in the database of the
-- service that consumes. Every row names its consumer, so that several consumers can
-- share one database. Migration history: table `orders_consumer_migrations`.

-- Effects once: the ids of the records whose effect committed, inserted in the same
-- transaction as the effect (see `inbox::claim`).
CREATE TABLE consumer_inbox (
    consumer   TEXT        NOT NULL,
    id         TEXT        NOT NULL,
    handled_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, id)
);

-- Records whose handling failed for good (a permanent error, retries exhausted, an
-- undecodable record), as they were, with why. Also produced to the dead-letter topic;
-- this copy is the one replayed. `replays` counts the replays that failed again.
CREATE TABLE consumer_dead_letters (
    id              BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer        TEXT        NOT NULL,
    topic           TEXT        NOT NULL,
    partition       INTEGER     NOT NULL,
    "offset"        BIGINT      NOT NULL,
    key             BYTEA,
    payload         BYTEA,
    header_names    TEXT[]      NOT NULL,
    header_values   BYTEA[]     NOT NULL,
    timestamp_ms    BIGINT,
    reason          TEXT        NOT NULL,
    attempts        INTEGER     NOT NULL,
    dead_lettered_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (consumer, topic, partition, "offset")
);
CREATE INDEX consumer_dead_letters_key ON consumer_dead_letters (consumer, key);

-- Keys held back behind a dead letter: their later records are parked, not handled,
-- until the key's dead letters are replayed or discarded and its parked records
-- handled in order. The row is the lock that orders parking against releasing.
CREATE TABLE consumer_held_keys (
    consumer TEXT        NOT NULL,
    key      BYTEA       NOT NULL,
    held_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, key)
);

-- Records of held keys, in arrival order (`id`), waiting for their key's release.
CREATE TABLE consumer_parked (
    id            BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    consumer      TEXT        NOT NULL,
    topic         TEXT        NOT NULL,
    partition     INTEGER     NOT NULL,
    "offset"      BIGINT      NOT NULL,
    key           BYTEA       NOT NULL,
    payload       BYTEA,
    header_names  TEXT[]      NOT NULL,
    header_values BYTEA[]     NOT NULL,
    timestamp_ms  BIGINT,
    parked_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (consumer, topic, partition, "offset")
);
CREATE INDEX consumer_parked_key ON consumer_parked (consumer, key, id);
