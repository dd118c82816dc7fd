-- The outbox is a queue: rows are inserted and deleted all the time. Vacuum it after
-- a fixed number of dead rows instead of a fraction of the table, so that dead index
-- entries at the head of its primary key do not pile up between runs and slow the
-- relay's reads.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 10000
);
