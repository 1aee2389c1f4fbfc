-- Cheaper change tracking: the tracking trigger's rows go into an index-less log, deduplicated
-- by readers and by compaction instead of by a primary key on the writers' path.
--
-- Before, every tracked table and writing transaction paid a speculative insert (INSERT ... ON
-- CONFLICT DO NOTHING) into mvgraph.change_log's primary key. Now the trigger appends a plain
-- row to mvgraph.write_log (unlogged, no index) for each writing statement. Deduplicating on the
-- writers' path was measured (benchmarks/trigger_cost.py): a transaction-local "already logged"
-- setting per table costs on every first write of a transaction to a table, between nothing and
-- as much as the insert it saves, so it is not done. A rolled-back statement (or savepoint)
-- takes its row with it.
--
-- mvgraph.change_log keeps the rarer rows (refreshes 'r', the event trigger's 'o' and 'd',
-- tracking starts 't', and 'w' rows written before this version or by other writers), with its
-- primary key. mvgraph.changes puts both together: one row per (relation, transaction), as
-- change_log alone used to hold, so every reader's results are unchanged.
CREATE UNLOGGED TABLE mvgraph.write_log (
    relid oid NOT NULL,
    xid   xid8 NOT NULL,
    at    timestamptz NOT NULL DEFAULT statement_timestamp()
);

-- One row per (relation, transaction): the kind is the non-'w' kind logged for it if any (as
-- the upserts into change_log made it), else 'w'; "at" is the earliest row's time (the row an
-- upsert kept).
CREATE VIEW mvgraph.changes AS
SELECT relid, xid,
       coalesce(max(kind::text) FILTER (WHERE kind <> 'w'), 'w')::"char" AS kind,
       min(at) AS at
  FROM (SELECT relid, xid, kind, at FROM mvgraph.change_log
        UNION ALL
        SELECT relid, xid, 'w'::"char", at FROM mvgraph.write_log) c
 GROUP BY relid, xid;

-- Existing triggers call this function by its oid, so replacing its body converts them all.
-- Every name is schema-qualified (no SET clause: a SET clause costs a GUC nesting level per
-- call). TG_NARGS > 0: a partition, whose writes are writes to every partitioned table above it.
-- One row per statement: a statement trigger fires even when no row is written (as before).
CREATE OR REPLACE FUNCTION mvgraph.track_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF TG_NARGS OPERATOR(pg_catalog.=) 0 THEN
        INSERT INTO mvgraph.write_log (relid, xid)
        VALUES (TG_RELID, pg_catalog.pg_current_xact_id());
    ELSE
        INSERT INTO mvgraph.write_log (relid, xid)
        SELECT a, pg_catalog.pg_current_xact_id()
          FROM pg_catalog.pg_partition_ancestors(TG_RELID) a;
    END IF;
    RETURN NULL;
END
$$;
ALTER FUNCTION mvgraph.track_write() RESET ALL;
