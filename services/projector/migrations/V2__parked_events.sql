-- Events that arrived before an earlier version of their order (a version gap) are parked
-- in the read model, in the transaction that also stores the position, and applied when
-- the missing version arrives (see src/project.rs).
--
-- The read model's DDL grows one function per migration: the function of V1 keeps its
-- body under the name projector_create_read_model_v1, this migration adds
-- projector_create_read_model_v2 (the parked events), and projector_create_read_model
-- (what a rebuild calls) runs them all in order. A later migration adds its _vN function
-- and replaces projector_create_read_model to call it too.
ALTER FUNCTION projector_create_read_model(TEXT) RENAME TO projector_create_read_model_v1;

CREATE FUNCTION projector_create_read_model_v2(target TEXT) RETURNS void
LANGUAGE plpgsql AS $function$
BEGIN
    EXECUTE format($ddl$
        -- An event waiting for an earlier version of its order: applied (and deleted) in
        -- the batch that brings the missing version. Only what the topic says, so that a
        -- rebuild parks exactly what the live projection parked.
        CREATE TABLE %1$I.parked_events (
            order_id         UUID        NOT NULL,
            version          BIGINT      NOT NULL CHECK (version > 1),
            event_type       TEXT        NOT NULL,
            -- Where the record is in the topic, and its timestamp (for the age gauge).
            partition        INTEGER     NOT NULL,
            "offset"         BIGINT      NOT NULL,
            record_timestamp TIMESTAMPTZ,
            -- The record's value: the event envelope as published.
            payload          BYTEA       NOT NULL,
            PRIMARY KEY (order_id, version)
        );
    $ddl$, target);
END
$function$;

CREATE FUNCTION projector_create_read_model(target TEXT) RETURNS void
LANGUAGE plpgsql AS $function$
BEGIN
    PERFORM projector_create_read_model_v1(target);
    PERFORM projector_create_read_model_v2(target);
END
$function$;

SELECT projector_create_read_model_v2('read_model');
