-- The read model of the projector. Its tables live in a schema of their own so that a
-- rebuild can fill a fresh copy (`read_model_next`) while the live one serves, then swap
-- the two by renaming schemas in one transaction (see src/rebuild.rs).
--
-- projector_create_read_model(target) creates the schema `target` with every table the
-- projector needs; this migration calls it for the live schema `read_model`. A later
-- migration that changes the read model replaces this function (so that rebuilds create
-- the new shape) and alters `read_model`, or leaves the change to a rebuild.
CREATE FUNCTION projector_create_read_model(target TEXT) RETURNS void
LANGUAGE plpgsql AS $function$
BEGIN
    EXECUTE format($ddl$
        CREATE SCHEMA %1$I;

        -- One row per order: what GET /queries/orders/{id} answers.
        CREATE TABLE %1$I.order_views (
            order_id          UUID        PRIMARY KEY,
            user_id           TEXT        NOT NULL,
            status            TEXT        NOT NULL
                              CHECK (status IN ('pending', 'paid', 'shipped', 'cancelled')),
            currency          TEXT        NOT NULL,
            total_minor       BIGINT      NOT NULL,
            items             JSONB       NOT NULL,
            payment_id        TEXT,
            amount_paid_minor BIGINT,
            shipment_id       TEXT,
            tracking_number   TEXT,
            cancel_reason     TEXT,
            created_at        TIMESTAMPTZ NOT NULL,
            updated_at        TIMESTAMPTZ NOT NULL,
            paid_at           TIMESTAMPTZ,
            shipped_at        TIMESTAMPTZ,
            cancelled_at      TIMESTAMPTZ,
            -- The version of the last event applied: events apply in version order only.
            -- (The order's history is its status timestamps: its life is linear, created,
            -- then paid, then shipped, or cancelled at any point before shipping.)
            version           BIGINT      NOT NULL CHECK (version > 0),
            -- Set when an event arrived past a missing version (a gap): the version the
            -- view waits for. The view stays at `version`, consistent but stalled.
            missing_version   BIGINT
        ) WITH (fillfactor = 80);  -- room for HOT updates: an order's row changes 2 or 3 times
        -- A user's orders, newest first, in a stable order (GET /queries/users/{id}/orders).
        CREATE INDEX order_views_user_newest ON %1$I.order_views (user_id, created_at DESC, order_id DESC);

        -- Per-user statistics, by currency: orders by current status, and the payments of
        -- orders paid and not cancelled (GET /queries/users/{id}/stats sums the rows).
        -- Sharded by the Kafka partition of the orders: each partition's batches write only
        -- their own rows, so concurrent partition transactions never wait on each other's
        -- row locks. An order stays on its partition (the key is its id), so the rows are
        -- the same however the events were batched (a rebuild equals the live model).
        CREATE TABLE %1$I.user_stats (
            user_id         TEXT    NOT NULL,
            currency        TEXT    NOT NULL,
            partition       INTEGER NOT NULL,
            order_count     BIGINT  NOT NULL,
            pending_count   BIGINT  NOT NULL,
            paid_count      BIGINT  NOT NULL,
            shipped_count   BIGINT  NOT NULL,
            cancelled_count BIGINT  NOT NULL,
            spent_minor     BIGINT  NOT NULL,
            PRIMARY KEY (user_id, currency, partition)
        ) WITH (fillfactor = 70);

        -- The consumer's positions, committed with the read model (orders-projection).
        CREATE TABLE %1$I.consumer_positions (
            projection  TEXT        NOT NULL,
            topic       TEXT        NOT NULL,
            partition   INTEGER     NOT NULL,
            next_offset BIGINT      NOT NULL CHECK (next_offset >= 0),
            updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (projection, topic, partition)
        );
    $ddl$, target);
END
$function$;

SELECT projector_create_read_model('read_model');
