-- How far each partition of the topic has got, in event time: what lets a
-- `?min_version=` query for an order the read model has never seen answer `404` at once
-- when every partition is past the time the order was created (see src/waiters.rs).
-- Same pattern as V2: one _vN function per migration, run in order by
-- projector_create_read_model.
CREATE FUNCTION projector_create_read_model_v3(target TEXT) RETURNS void
LANGUAGE plpgsql AS $function$
BEGIN
    EXECUTE format($ddl$
        -- The latest `occurred_at` of the events of each partition's batches (applied,
        -- duplicate or parked alike): written by each batch of the partition only, in its
        -- transaction; derived from the events, so a rebuild writes the same rows.
        CREATE TABLE %1$I.partition_clock (
            partition   INTEGER     PRIMARY KEY,
            occurred_to TIMESTAMPTZ NOT NULL
        );
    $ddl$, target);
END
$function$;

CREATE OR REPLACE FUNCTION projector_create_read_model(target TEXT) RETURNS void
LANGUAGE plpgsql AS $function$
BEGIN
    PERFORM projector_create_read_model_v1(target);
    PERFORM projector_create_read_model_v2(target);
    PERFORM projector_create_read_model_v3(target);
END
$function$;

SELECT projector_create_read_model_v3('read_model');
