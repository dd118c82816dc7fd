-- The table of positions a projection needs, in the same schema as its read model
-- (so that they commit together and move together when a rebuilt schema is swapped in).
-- `next_offset` is the offset of the next record to apply: the last applied one plus one.
CREATE TABLE consumer_positions (
    projection  TEXT        NOT NULL,
    topic       TEXT        NOT NULL,
    partition   INTEGER     NOT NULL,
    next_offset BIGINT      NOT NULL CHECK (next_offset >= 0),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);
