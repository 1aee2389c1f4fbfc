-- A REFRESH MATERIALIZED VIEW run outside mvgraph (psql, dbt, pg_cron) counts as a refresh of the
-- view: a ddl_command_start event trigger (mvgraph_ddl_start, installed with mvgraph_ddl_end by
-- changes.install_event_trigger) keeps pg_current_snapshot() for the transaction before the
-- REFRESH takes its own snapshot, and mvgraph.on_ddl_end records it as the view's last refresh
-- once the command succeeded. An earlier snapshot than the REFRESH read only errs toward
-- refreshing again (under READ COMMITTED the REFRESH takes a later one; under REPEATABLE READ
-- both are the transaction's). A failed REFRESH records nothing: ddl_command_end does not fire
-- and the transaction rolls back.

-- What a view's freshness depends on, as the oids whose change rows concern it: its inputs,
-- through plain views (included: their definitions can change) down to tables, materialized
-- and foreign tables, and the partitioned tables above each partition. The same set that
-- refresh_step receives from the client (changes.freshness_inputs with Relation.change_oids).
CREATE FUNCTION mvgraph.view_inputs(view_oid oid) RETURNS oid[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE reach(oid) AS (
        SELECT d.refobjid
          FROM pg_rewrite r
          JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
         WHERE r.ev_class = view_oid AND d.refclassid = 'pg_class'::regclass
           AND d.deptype = 'n' AND d.refobjid <> r.ev_class
        UNION
        SELECT d.refobjid
          FROM reach
          JOIN pg_class c ON c.oid = reach.oid AND c.relkind = 'v'
          JOIN pg_rewrite r ON r.ev_class = c.oid
          JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
         WHERE d.refclassid = 'pg_class'::regclass AND d.deptype = 'n'
           AND d.refobjid <> r.ev_class
    )
    SELECT coalesce(array_agg(DISTINCT o ORDER BY o), '{}')
      FROM (SELECT oid FROM reach
            UNION SELECT a FROM reach, pg_partition_ancestors(reach.oid) a) found(o)
$$;

-- ddl_command_start of REFRESH MATERIALIZED VIEW (the event trigger's WHEN clause): keep the
-- snapshot and the start time for this transaction, in a transaction-local setting; each REFRESH
-- overwrites it. ROW EXCLUSIVE on mv_state, held to commit, keeps compaction away (it needs
-- SHARE): no change row this refresh has not seen is deleted before its record is written.
CREATE FUNCTION mvgraph.on_ddl_start() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('mvgraph.refreshing', true) = 'on' THEN  -- mvgraph's own refresh
        RETURN;
    END IF;
    LOCK TABLE mvgraph.mv_state IN ROW EXCLUSIVE MODE;
    PERFORM set_config('mvgraph.outside_snapshot',
                       pg_current_snapshot()::text || '|' || extract(epoch FROM clock_timestamp()),
                       true);
END
$$;

-- Record an outside refresh of a view from what on_ddl_start kept. The transaction's own id is
-- made not visible in the recorded snapshot and no refresh_xid is kept, unlike mvgraph's own
-- one-statement refreshes: writes (and refreshes of input views) the same transaction makes
-- after this REFRESH must still count; those it made before count once more (conservative).
-- 'stats' inputs get no recorded counters, so a view reading one is stale after an outside
-- refresh (counters read now could include writes the REFRESH did not see).
CREATE FUNCTION mvgraph.record_outside_refresh(view_oid oid, kept text)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    snap    pg_snapshot := split_part(kept, '|', 1)::pg_snapshot;
    started timestamptz := to_timestamp(split_part(kept, '|', 2)::double precision);
    own     xid8 := pg_current_xact_id();
BEGIN
    IF pg_visible_in_snapshot(own, snap) THEN  -- own id was assigned before the snapshot
        snap := format('%s:%s:%s', pg_snapshot_xmin(snap), pg_snapshot_xmax(snap),
                       array_to_string(ARRAY(SELECT x FROM pg_snapshot_xip(snap) x
                                             UNION SELECT own ORDER BY 1), ','))::pg_snapshot;
    END IF;
    INSERT INTO mvgraph.mv_state AS s (mv, name, snapshot, refresh_xid, refreshed_at, duration_s,
                                       fingerprint, inputs)
    SELECT c.oid, format('%I.%I', n.nspname, c.relname), snap, NULL, now(),
           extract(epoch FROM clock_timestamp() - started), NULL, mvgraph.view_inputs(c.oid)
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = view_oid
    ON CONFLICT (mv) DO UPDATE
       SET snapshot = EXCLUDED.snapshot, refresh_xid = NULL, refreshed_at = EXCLUDED.refreshed_at,
           duration_s = EXCLUDED.duration_s, fingerprint = NULL, inputs = EXCLUDED.inputs,
           stat_inputs = '{}', stat_counters = '{}', stat_filenodes = '{}';
END
$$;

-- ddl_command_end: as before, an outside REFRESH is a change for the view's readers ('o') and
-- other DDL a definition change ('d'); now an outside REFRESH is also recorded as the view's
-- last refresh (when on_ddl_start kept its snapshot).
CREATE OR REPLACE FUNCTION mvgraph.on_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cmd  record;
    kept text;
BEGIN
    IF current_setting('mvgraph.refreshing', true) = 'on' THEN
        RETURN;
    END IF;
    FOR cmd IN SELECT objid, command_tag FROM pg_event_trigger_ddl_commands()
                WHERE classid = 'pg_class'::regclass AND objsubid = 0 LOOP
        INSERT INTO mvgraph.change_log (relid, xid, kind)
        VALUES (cmd.objid, pg_current_xact_id(),
                CASE WHEN cmd.command_tag = 'REFRESH MATERIALIZED VIEW' THEN 'o' ELSE 'd' END)
        ON CONFLICT (relid, xid) DO UPDATE SET kind = EXCLUDED.kind;
        kept := nullif(current_setting('mvgraph.outside_snapshot', true), '');
        IF cmd.command_tag = 'REFRESH MATERIALIZED VIEW' AND kept IS NOT NULL THEN
            PERFORM mvgraph.record_outside_refresh(cmd.objid, kept);
            PERFORM set_config('mvgraph.outside_snapshot', '', true);
        END IF;
    END LOOP;
END
$$;
