-- One refresh step as one server-side call: the bookkeeping of a view's refresh runs next to the
-- data, in a single statement, instead of in half a dozen round trips from the client.

-- The inputs of each view's last refresh move into its state row (arrays), so that recording a
-- refresh is one UPDATE of one row instead of a delete and an upsert of several.
ALTER TABLE mvgraph.mv_state
    ADD COLUMN inputs         oid[] NOT NULL DEFAULT '{}',  -- oids whose change rows concern it
    ADD COLUMN stat_inputs    oid[] NOT NULL DEFAULT '{}',  -- its 'stats' inputs, with ...
    ADD COLUMN stat_counters  bigint[] NOT NULL DEFAULT '{}',  -- ... their write counters and
    ADD COLUMN stat_filenodes bigint[] NOT NULL DEFAULT '{}';  -- ... summed file nodes
UPDATE mvgraph.mv_state s
   SET inputs = coalesce(i.inputs, '{}'), stat_inputs = coalesce(i.stat_inputs, '{}'),
       stat_counters = coalesce(i.stat_counters, '{}'),
       stat_filenodes = coalesce(i.stat_filenodes, '{}')
  FROM (SELECT mv, array_agg(input ORDER BY input) AS inputs,
               array_agg(input ORDER BY input) FILTER (WHERE stat_counter IS NOT NULL)
                   AS stat_inputs,
               array_agg(stat_counter ORDER BY input) FILTER (WHERE stat_counter IS NOT NULL)
                   AS stat_counters,
               array_agg(filenode ORDER BY input) FILTER (WHERE stat_counter IS NOT NULL)
                   AS stat_filenodes
          FROM mvgraph.mv_input GROUP BY mv) i
 WHERE i.mv = s.mv;
DROP TABLE mvgraph.mv_input;

-- Write counters and file node of tables (summed over partitions), for 'stats' mode. The
-- pg_stat_get_* functions read one table's entry, far cheaper than the pg_stat_all_tables view.
CREATE FUNCTION mvgraph.write_counters(tables oid[])
RETURNS TABLE (relid oid, counter bigint, filenode bigint)
LANGUAGE plpgsql STABLE AS $$  -- plpgsql: its query plan is cached per session
BEGIN
    RETURN QUERY
    SELECT u.oid,
           sum(pg_catalog.pg_stat_get_tuples_inserted(c.oid)
               + pg_catalog.pg_stat_get_tuples_updated(c.oid)
               + pg_catalog.pg_stat_get_tuples_deleted(c.oid))::bigint,
           sum(c.relfilenode::bigint)::bigint
      FROM unnest(tables) AS u(oid)
     CROSS JOIN LATERAL (SELECT u.oid
                         UNION SELECT p.relid FROM pg_catalog.pg_partition_tree(u.oid) p) t(oid)
      JOIN pg_catalog.pg_class c ON c.oid = t.oid
     GROUP BY u.oid;
END
$$;

-- Refresh one materialized view and record it, inside the caller's transaction.
--
-- Under READ COMMITTED (the normal case) every statement below takes a new snapshot, so the
-- state row is read after the view's advisory lock is granted, and the snapshot recorded is
-- taken before the REFRESH's own: a write the refresh saw but the record did not only makes the
-- view stale once more (conservative), never the other way round. Under REPEATABLE READ (an
-- atomic run) all of it shares the transaction's snapshot, and the state row's UPDATE fails
-- with a serialization error if another process refreshed the view meanwhile.
--
-- With check_seen, the call refreshes only if the view's last refresh is still the one the plan
-- saw (refreshed_at = seen); otherwise it returns 'raced' having changed nothing, and the
-- caller decides again from fresh facts. Counters of 'stats' inputs are read here, before the
-- refresh's snapshot (conservative), unless the caller passes them (an atomic run reads them
-- before its transaction begins).
CREATE FUNCTION mvgraph.refresh_step(
    view_oid oid, view_name text, lock_key bigint, use_concurrently boolean,
    job bigint, step_seq integer, step_reason text,
    input_oids oid[], stats_oids oid[], stats_counters bigint[], stats_filenodes bigint[],
    check_seen boolean, seen timestamptz)
RETURNS TABLE (outcome text, duration_s double precision, content_changed boolean,
               recorded_reason text)
LANGUAGE plpgsql AS $$
DECLARE
    state   mvgraph.mv_state;
    snap    pg_catalog.pg_snapshot;
    started timestamptz;
    took    double precision;
    fp      text;
    changed boolean := true;
BEGIN
    PERFORM pg_catalog.pg_advisory_xact_lock(lock_key);
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_class c WHERE c.oid = view_oid) THEN
        RAISE EXCEPTION 'materialized view % was dropped during the run; run the refresh again',
              view_name USING ERRCODE = 'undefined_table';
    END IF;
    SELECT * INTO state FROM mvgraph.mv_state s WHERE s.mv = view_oid;
    IF check_seen AND state.refreshed_at IS DISTINCT FROM seen THEN
        RETURN QUERY SELECT 'raced'::text, 0::double precision, false, step_reason;
        RETURN;
    END IF;

    IF stats_counters IS NULL AND cardinality(stats_oids) > 0 THEN
        SELECT array_agg(w.relid), array_agg(w.counter), array_agg(w.filenode)
          INTO stats_oids, stats_counters, stats_filenodes
          FROM mvgraph.write_counters(stats_oids) w;
    END IF;

    snap := pg_catalog.pg_current_snapshot();
    PERFORM pg_catalog.set_config('mvgraph.refreshing', 'on', true);  -- the event trigger skips it
    started := pg_catalog.clock_timestamp();
    EXECUTE pg_catalog.format('REFRESH MATERIALIZED VIEW %s %s',
                              CASE WHEN use_concurrently THEN 'CONCURRENTLY' ELSE '' END,
                              view_oid::regclass);
    took := extract(epoch FROM pg_catalog.clock_timestamp() - started);
    PERFORM pg_catalog.set_config('mvgraph.refreshing', 'off', true);

    IF state.early_cutoff THEN  -- order-independent content fingerprint: rows and sum of hashes
        EXECUTE pg_catalog.format(
            'SELECT count(*)::text || '':'' || '
            'coalesce(sum(pg_catalog.hashtextextended(t::text, 0)::numeric), 0)::text '
            'FROM %s AS t', view_oid::regclass) INTO fp;
        changed := fp IS DISTINCT FROM state.fingerprint;
        IF NOT changed THEN
            step_reason := step_reason || '; content unchanged (early cutoff: dependents stay fresh)';
        END IF;
    END IF;

    UPDATE mvgraph.mv_state s
       SET snapshot = snap, refresh_xid = pg_catalog.pg_current_xact_id(), refreshed_at = now(),
           duration_s = took, fingerprint = fp, name = view_name, inputs = input_oids,
           stat_inputs = coalesce(stats_oids, '{}'), stat_counters = coalesce(stats_counters, '{}'),
           stat_filenodes = coalesce(stats_filenodes, '{}')
     WHERE s.mv = view_oid;
    IF changed THEN  -- readers of this view see it changed
        INSERT INTO mvgraph.change_log (relid, xid, kind)
        VALUES (view_oid, pg_catalog.pg_current_xact_id(), 'r')
        ON CONFLICT (relid, xid) DO UPDATE SET kind = 'r';
    END IF;
    UPDATE mvgraph.job_step
       SET status = 'done',
           reason = step_reason,
           started_at = started, finished_at = pg_catalog.clock_timestamp(), duration_s = took,
           concurrent = use_concurrently, backend_pid = pg_catalog.pg_backend_pid(), error = NULL
     WHERE job_id = job AND seq = step_seq;
    RETURN QUERY SELECT 'refreshed'::text, took, changed, step_reason;
END
$$;

-- Writers pay for change tracking on every statement, so the log is made as cheap as it can be
-- while staying exact: UNLOGGED (no WAL for a row that only says "this transaction wrote this
-- table"), and the tracking trigger fires BEFORE the statement (no after-trigger queue) with a
-- body whose every name is schema-qualified instead of a SET search_path clause.
--
-- An unlogged table is emptied by crash recovery (and is empty on a promoted standby). The one
-- row of mvgraph.change_log_intact, unlogged too, vanishes with it: mvgraph.change_log_intact()
-- notices that, forgets every view's last refresh (so each is refreshed once) and puts the row
-- back, in one transaction.
ALTER TABLE mvgraph.change_log SET UNLOGGED;
CREATE UNLOGGED TABLE mvgraph.change_log_intact (
    intact boolean PRIMARY KEY DEFAULT true CHECK (intact)
);
INSERT INTO mvgraph.change_log_intact DEFAULT VALUES;

CREATE FUNCTION mvgraph.change_log_intact() RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM mvgraph.change_log_intact) THEN
        RETURN true;
    END IF;
    LOCK TABLE mvgraph.change_log_intact IN EXCLUSIVE MODE;  -- one session repairs
    IF EXISTS (SELECT FROM mvgraph.change_log_intact) THEN
        RETURN true;
    END IF;
    UPDATE mvgraph.mv_state
       SET snapshot = NULL, refresh_xid = NULL, refreshed_at = NULL, fingerprint = NULL;
    INSERT INTO mvgraph.change_log_intact DEFAULT VALUES;
    RETURN false;
END
$$;

CREATE OR REPLACE FUNCTION mvgraph.track_write() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF TG_NARGS OPERATOR(pg_catalog.=) 0 THEN
        INSERT INTO mvgraph.change_log (relid, xid)
        VALUES (TG_RELID, pg_catalog.pg_current_xact_id())
        ON CONFLICT DO NOTHING;
    ELSE  -- on a partition: a write here is a write to every partitioned table above it
        INSERT INTO mvgraph.change_log (relid, xid)
        SELECT a, pg_catalog.pg_current_xact_id() FROM pg_catalog.pg_partition_ancestors(TG_RELID) a
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;
ALTER FUNCTION mvgraph.track_write() RESET ALL;
