-- The windows read model: the latest `UserWindowStats` of `order-stats` per user,
-- window and currency (GET /queries/users/{id}/windows). It lives in a schema of its
-- own, `window_stats`, with its own positions, because `projector rebuild` cannot
-- rebuild it: `order-stats` is compacted by user id, so the topic keeps only each
-- user's latest record, not every window. A rebuild swaps `read_model` only and leaves
-- this schema alone; its positions commit with its rows, as the read model's do.
CREATE SCHEMA window_stats;

CREATE TABLE window_stats.user_windows (
    user_id         TEXT        NOT NULL,
    window_start    TIMESTAMPTZ NOT NULL,
    window_end      TIMESTAMPTZ NOT NULL CHECK (window_end > window_start),
    currency        TEXT        NOT NULL,
    order_count     BIGINT      NOT NULL CHECK (order_count >= 0),
    paid_count      BIGINT      NOT NULL CHECK (paid_count >= 0),
    cancelled_count BIGINT      NOT NULL CHECK (cancelled_count >= 0),
    revenue_minor   BIGINT      NOT NULL CHECK (revenue_minor >= 0),
    refunded_minor  BIGINT      NOT NULL CHECK (refunded_minor >= 0),
    final           BOOLEAN     NOT NULL,
    -- The record this row is: a record at or before it on the same partition never
    -- overwrites it (a replay of old records changes nothing).
    source_partition INTEGER    NOT NULL,
    source_offset    BIGINT     NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The end too: hopping windows, or a change of window size, give windows that
    -- start together.
    PRIMARY KEY (user_id, window_start, window_end, currency)
) WITH (fillfactor = 80);  -- an open window's row is rewritten on each update

-- The consumer's positions, committed with the windows (orders-projection): the same
-- table as the read model's.
CREATE TABLE window_stats.consumer_positions (LIKE read_model.consumer_positions INCLUDING ALL);
