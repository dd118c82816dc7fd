-- Least privilege (scheme: the orders-eventstore crate's V4): the role without login
-- orders_projector carries what the projector needs: the read model's and the windows'
-- tables (rows only: the schema is the owner's, who runs the migrations and a
-- rebuild) and the migration history. Created when missing (needs CREATEROLE).
--
-- A rebuild makes the read model anew in another schema with
-- projector_create_read_model, then swaps the schemas' names: this migration's _v5
-- function grants the new schema's tables, so that the swapped-in read model carries
-- the same privileges (the pattern of V2).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orders_projector') THEN
        CREATE ROLE orders_projector NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- created meanwhile by a concurrent migration of another database
END
$$;

CREATE FUNCTION projector_create_read_model_v5(target TEXT) RETURNS void
LANGUAGE plpgsql AS $function$
BEGIN
    EXECUTE format($ddl$
        GRANT USAGE ON SCHEMA %1$I TO orders_projector;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %1$I TO orders_projector;
    $ddl$, target);
END
$function$;

CREATE OR REPLACE FUNCTION projector_create_read_model(target TEXT) RETURNS void
LANGUAGE plpgsql AS $function$
BEGIN
    PERFORM projector_create_read_model_v1(target);
    PERFORM projector_create_read_model_v2(target);
    PERFORM projector_create_read_model_v3(target);
    PERFORM projector_create_read_model_v5(target);
END
$function$;

SELECT projector_create_read_model_v5('read_model');
SELECT projector_create_read_model_v5('window_stats');
GRANT SELECT ON refinery_schema_history TO orders_projector;
