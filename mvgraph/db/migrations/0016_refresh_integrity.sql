-- Refresh records nobody can forge, and an early cutoff that calls nothing a view's owner
-- defined.
--
-- Before, the event triggers skipped their work when the setting mvgraph.refreshing was 'on',
-- which any role may set (SET mvgraph.refreshing = on; CREATE OR REPLACE VIEW ... left the views
-- downstream planned as fresh). Now mvgraph's own REFRESH is recognised by a row of
-- mvgraph.own_refresh (this backend, this transaction, this view), written by
-- mvgraph.begin_own_refresh for a caller that may refresh the view, and honoured for that
-- REFRESH only: every other statement is logged, whoever runs it.
--
-- The refresh state tables (mv_state, change_log, write_log, table_mode) are no longer
-- writable by any level: refresh_step records a refresh through mvgraph.record_refresh, which
-- checks that the caller may refresh the view and (where the event triggers run) that a REFRESH
-- of it really ran in this transaction; configuring, tracking and compaction are functions too.
--
-- The content fingerprint of early cutoff is computed without a cast: the view's owner owns its
-- row type and may define a cast of it to text, which would run as whoever refreshes. The row
-- is turned into text by record_out (the output functions of its columns' types: built-in, or
-- made by a superuser), every name qualified.

CREATE UNLOGGED TABLE mvgraph.own_refresh (
    pid       integer NOT NULL,
    xid       xid8 NOT NULL,
    relid     oid NOT NULL,
    confirmed boolean NOT NULL DEFAULT false,  -- the event trigger saw the REFRESH run
    PRIMARY KEY (pid, relid)
);

-- A view's content fingerprint (rows, and the sum of the hashes of their text): order-free,
-- nothing of the owner's called.
CREATE FUNCTION mvgraph.content_fingerprint(view_oid oid) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fp text;
BEGIN
    EXECUTE format(
        'SELECT pg_catalog.count(*)::pg_catalog.text OPERATOR(pg_catalog.||) '':'' '
        'OPERATOR(pg_catalog.||) coalesce(pg_catalog.sum(pg_catalog.hashtextextended('
        'pg_catalog.textin(pg_catalog.record_out(t)), 0)::pg_catalog.numeric), 0)'
        '::pg_catalog.text FROM %s AS t', view_oid::regclass) INTO fp;
    RETURN fp;
END
$$;

-- mvgraph is about to refresh a view in this transaction: the event triggers leave that
-- REFRESH to mvgraph.record_refresh (which writes the view's change for its readers itself).
CREATE FUNCTION mvgraph.begin_own_refresh(view_oid oid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF NOT mvgraph.may_refresh(view_oid) THEN
        RAISE EXCEPTION 'permission denied: % may not refresh %', mvgraph.actor(),
              coalesce(view_oid::regclass::text, view_oid::text)
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO mvgraph.own_refresh (pid, xid, relid)
    VALUES (pg_backend_pid(), pg_current_xact_id(), view_oid)
    ON CONFLICT (pid, relid) DO UPDATE SET xid = EXCLUDED.xid, confirmed = false;
END
$$;

-- Whether the REFRESH now ending (or starting) in this backend is mvgraph's own.
CREATE FUNCTION mvgraph.own_refresh_of(view_oid oid) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM mvgraph.own_refresh o
                    WHERE o.pid = pg_backend_pid() AND o.xid = pg_current_xact_id()
                      AND (view_oid IS NULL OR o.relid = view_oid))
$$;

CREATE OR REPLACE FUNCTION mvgraph.on_ddl_start() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF mvgraph.own_refresh_of(NULL) THEN  -- mvgraph's own refresh keeps its own snapshot
        RETURN;
    END IF;
    LOCK TABLE mvgraph.mv_state IN ROW EXCLUSIVE MODE;
    PERFORM set_config('mvgraph.outside_snapshot',
                       pg_current_snapshot()::text || '|' || extract(epoch FROM clock_timestamp()),
                       true);
END
$$;

-- ddl_command_end: an outside REFRESH is a change for the view's readers ('o') and recorded as
-- its last refresh (from the snapshot on_ddl_start kept); other DDL is a definition change
-- ('d'). mvgraph's own REFRESH of a view it marked is only confirmed here.
CREATE OR REPLACE FUNCTION mvgraph.on_ddl_end() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cmd  record;
    kept text;
BEGIN
    FOR cmd IN SELECT objid, command_tag FROM pg_event_trigger_ddl_commands()
                WHERE classid = 'pg_class'::regclass AND objsubid = 0 LOOP
        IF cmd.command_tag = 'REFRESH MATERIALIZED VIEW' AND mvgraph.own_refresh_of(cmd.objid)
        THEN
            UPDATE mvgraph.own_refresh SET confirmed = true
             WHERE pid = pg_backend_pid() AND relid = cmd.objid;
            CONTINUE;
        END IF;
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

-- Record mvgraph's refresh of a view, in the refresh's transaction: its state (snapshot taken
-- before the REFRESH, duration, inputs, counters), a change for its readers unless early cutoff
-- proves the content the same, and the job step. Returns whether the content changed and the
-- reason as recorded.
CREATE FUNCTION mvgraph.record_refresh(
    view_oid oid, view_name text, snap pg_snapshot, took double precision,
    input_oids oid[], stats_oids oid[], stats_counters bigint[], stats_filenodes bigint[],
    job bigint, step_seq integer, step_reason text, use_concurrently boolean,
    started timestamptz)
RETURNS TABLE (content_changed boolean, recorded_reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    own     mvgraph.own_refresh;
    state   mvgraph.mv_state;
    fp      text;
    changed boolean := true;
    watched boolean;
BEGIN
    SELECT * INTO own FROM mvgraph.own_refresh o
     WHERE o.pid = pg_backend_pid() AND o.relid = view_oid AND o.xid = pg_current_xact_id();
    IF NOT FOUND OR NOT mvgraph.may_refresh(view_oid) THEN
        RAISE EXCEPTION 'no refresh of % to record in this transaction', view_name
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT EXISTS (SELECT FROM pg_event_trigger WHERE evtname = 'mvgraph_ddl_end'
                                                  AND evtenabled <> 'D') INTO watched;
    IF watched AND NOT own.confirmed THEN  -- the event trigger saw no REFRESH of it
        RAISE EXCEPTION 'no refresh of % ran in this transaction', view_name
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM mvgraph.own_refresh o WHERE o.pid = pg_backend_pid() AND o.relid = view_oid;
    SELECT * INTO state FROM mvgraph.mv_state s WHERE s.mv = view_oid;
    IF state.early_cutoff THEN
        fp := mvgraph.content_fingerprint(view_oid);
        changed := fp IS DISTINCT FROM state.fingerprint;
        IF NOT changed THEN
            step_reason := step_reason || '; content unchanged (early cutoff: dependents stay fresh)';
        END IF;
    END IF;
    UPDATE mvgraph.mv_state s
       SET snapshot = snap, refresh_xid = pg_current_xact_id(), refreshed_at = now(),
           duration_s = took, fingerprint = fp, name = view_name, inputs = input_oids,
           stat_inputs = coalesce(stats_oids, '{}'), stat_counters = coalesce(stats_counters, '{}'),
           stat_filenodes = coalesce(stats_filenodes, '{}')
     WHERE s.mv = view_oid;
    IF changed THEN  -- readers of this view see it changed
        INSERT INTO mvgraph.change_log (relid, xid, kind)
        VALUES (view_oid, pg_current_xact_id(), 'r')
        ON CONFLICT (relid, xid) DO UPDATE SET kind = 'r';
    END IF;
    IF job IS NOT NULL THEN
        PERFORM mvgraph.step_finished(job, step_seq, 'done', step_reason, took, NULL,
                                      use_concurrently);
        PERFORM mvgraph.step_started_at(job, step_seq, started);
    END IF;
    RETURN QUERY SELECT changed, step_reason;
END
$$;

-- Refresh one materialized view and record it (SECURITY INVOKER: the REFRESH runs with the
-- caller's rights; the record is mvgraph.record_refresh's).
CREATE OR REPLACE FUNCTION mvgraph.refresh_step(
    view_oid oid, view_name text, lock_key bigint, use_concurrently boolean,
    job bigint, step_seq integer, step_reason text,
    input_oids oid[], stats_oids oid[], stats_counters bigint[], stats_filenodes bigint[],
    check_seen boolean, seen timestamptz, job_attempt integer, run_as name)
RETURNS TABLE (outcome text, duration_s double precision, content_changed boolean,
               recorded_reason text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    state   mvgraph.mv_state;
    snap    pg_snapshot;
    started timestamptz;
    took    double precision;
    req     text;
    r       record;
BEGIN
    IF job IS NOT NULL THEN
        SELECT CASE WHEN j.request IS NOT NULL THEN j.request
                    WHEN j.status <> 'running' THEN j.status
                    WHEN job_attempt IS NOT NULL AND j.attempt <> job_attempt THEN 'lost' END
          INTO req FROM mvgraph.job j WHERE j.id = job;  -- no lock: cancel_job must not wait
        IF req IS NOT NULL THEN
            RAISE EXCEPTION 'job %: % requested; % not started', job, req, view_name
                  USING ERRCODE = 'MVJ01';
        END IF;
    END IF;
    IF lock_key IS NOT NULL THEN  -- lock_mode off: none
        PERFORM pg_advisory_xact_lock(lock_key);
    END IF;
    IF NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = view_oid) THEN
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

    snap := pg_current_snapshot();
    PERFORM mvgraph.begin_own_refresh(view_oid);
    IF run_as IS NOT NULL THEN  -- a role this session may take (SET ROLE rules apply)
        PERFORM set_config('role', run_as, true);
    END IF;
    started := clock_timestamp();
    EXECUTE format('REFRESH MATERIALIZED VIEW %s %s',
                   CASE WHEN use_concurrently THEN 'CONCURRENTLY' ELSE '' END,
                   view_oid::regclass);
    took := extract(epoch FROM clock_timestamp() - started);
    IF run_as IS NOT NULL THEN
        PERFORM set_config('role', 'none', true);
    END IF;
    SELECT * INTO r FROM mvgraph.record_refresh(
        view_oid, view_name, snap, took, input_oids, stats_oids, stats_counters,
        stats_filenodes, job, step_seq, step_reason, use_concurrently, started);
    RETURN QUERY SELECT 'done'::text, took, r.content_changed, r.recorded_reason;
END
$$;

-- Row state for views about to be planned or refreshed (only materialized views get a row).
CREATE FUNCTION mvgraph.ensure_mv_state(view_oids oid[], view_names text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO mvgraph.mv_state (mv, name)
    SELECT u.oid, u.name FROM unnest(view_oids, view_names) AS u(oid, name)
      JOIN pg_class c ON c.oid = u.oid AND c.relkind = 'm'
     ORDER BY u.oid
    ON CONFLICT (mv) DO UPDATE SET name = EXCLUDED.name WHERE mv_state.name <> EXCLUDED.name;
END
$$;

-- Early cutoff and volatility of a view: for a role that may refresh it.
CREATE FUNCTION mvgraph.configure_view(view_oid oid, cutoff boolean, volatility text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT mvgraph.may_refresh(view_oid) THEN
        RAISE EXCEPTION 'permission denied: % may not refresh %', mvgraph.actor(),
              coalesce(view_oid::regclass::text, view_oid::text)
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'configure views you own (or hold MAINTAIN on)';
    END IF;
    UPDATE mvgraph.mv_state
       SET early_cutoff = coalesce(cutoff, early_cutoff),
           volatile_mode = coalesce(volatility, volatile_mode)
     WHERE mv = view_oid;
END
$$;

-- Tracking: for the tables' owners (who create the triggers).
CREATE FUNCTION mvgraph.own_table(table_oid oid) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = table_oid
                     AND pg_has_role(mvgraph.actor(), c.relowner, 'MEMBER')) THEN
        RAISE EXCEPTION 'permission denied: % does not own %', mvgraph.actor(),
              coalesce(table_oid::regclass::text, table_oid::text)
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'the table''s owner tracks it';
    END IF;
END
$$;

CREATE FUNCTION mvgraph.set_table_mode(table_oid oid, table_name text, table_mode text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM mvgraph.own_table(table_oid);
    INSERT INTO mvgraph.table_mode (relid, name, mode) VALUES (table_oid, table_name, table_mode)
    ON CONFLICT (relid) DO UPDATE
       SET mode = EXCLUDED.mode, name = EXCLUDED.name,
           since = CASE WHEN table_mode.mode = EXCLUDED.mode THEN table_mode.since ELSE now() END;
END
$$;

CREATE FUNCTION mvgraph.clear_table_mode(table_oid oid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM mvgraph.own_table(table_oid);
    DELETE FROM mvgraph.table_mode WHERE relid = table_oid;
END
$$;

-- Views reading a table become stale when its tracking starts or stops (writes before were
-- not logged): a change of the tables and every partitioned table or inheritance parent above.
-- Anyone may make a view stale (it is only refreshed once more).
CREATE FUNCTION mvgraph.log_tracking_start(table_oids oid[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO mvgraph.change_log (relid, xid, kind)
    SELECT DISTINCT t.oid, pg_current_xact_id(), 't'
      FROM unnest(table_oids) AS u(oid)
     CROSS JOIN LATERAL (
           WITH RECURSIVE up(oid) AS (
               SELECT u.oid
               UNION SELECT i.inhparent FROM pg_inherits i JOIN up ON i.inhrelid = up.oid)
           SELECT up.oid FROM up) t(oid)
    ON CONFLICT (relid, xid) DO UPDATE SET kind = 't';
END
$$;

-- Held from before a refresh's snapshot until it commits (LOCK takes no snapshot).
CREATE FUNCTION mvgraph.keep_compaction_away() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    LOCK TABLE mvgraph.mv_state IN ROW EXCLUSIVE MODE;
END
$$;

-- Compaction (see queries.sql's history of it): drop change rows every reader has seen, and
-- state rows of dropped views, when no refresh runs; false when a refresh or another
-- compaction holds mv_state (a later run compacts). Call it in a REPEATABLE READ transaction.
CREATE FUNCTION mvgraph.compact() RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    BEGIN
        LOCK TABLE mvgraph.mv_state IN SHARE ROW EXCLUSIVE MODE NOWAIT;
    EXCEPTION WHEN lock_not_available THEN
        RETURN false;
    END;
    DELETE FROM mvgraph.mv_state s
     WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = s.mv AND c.relkind = 'm');
    WITH readers AS MATERIALIZED (
        SELECT unnest(s.inputs) AS input, s.snapshot, s.refresh_xid FROM mvgraph.mv_state s
    ), horizon AS MATERIALIZED (
        SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin
    ), marks AS (
        DELETE FROM mvgraph.change_log c
         WHERE NOT EXISTS (
               SELECT 1 FROM readers r
                WHERE r.input = c.relid
                  AND (r.snapshot IS NULL
                       OR (NOT pg_visible_in_snapshot(c.xid, r.snapshot)
                           AND c.xid IS DISTINCT FROM r.refresh_xid)))
           AND c.xid < (SELECT xmin FROM horizon)
    )
    DELETE FROM mvgraph.write_log c
     WHERE NOT EXISTS (
           SELECT 1 FROM readers r
            WHERE r.input = c.relid
              AND (r.snapshot IS NULL
                   OR (NOT pg_visible_in_snapshot(c.xid, r.snapshot)
                       AND c.xid IS DISTINCT FROM r.refresh_xid)));
    RETURN true;
END
$$;

-- refresh_batch's lock on mv_state, through the function above.
DO $$
DECLARE
    body text;
BEGIN
    SELECT p.prosrc INTO body FROM pg_proc p WHERE p.oid = 'mvgraph.refresh_batch(bigint, integer, name, jsonb, jsonb)'::regprocedure;
    body := replace(body, 'LOCK TABLE mvgraph.mv_state IN ROW EXCLUSIVE MODE;',
                    'PERFORM mvgraph.keep_compaction_away();');
    EXECUTE format('CREATE OR REPLACE PROCEDURE mvgraph.refresh_batch(job bigint, '
                   'job_attempt integer, run_as name, steps jsonb, INOUT outcome jsonb DEFAULT '
                   'NULL) LANGUAGE plpgsql AS %L', body);
END
$$;

-- The levels, without write rights on the refresh state (every write is a function above).
CREATE OR REPLACE FUNCTION mvgraph.level_grants(wanted text)
RETURNS TABLE (kind text, object text, privilege text)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT g.kind, g.object, g.privilege
      FROM (VALUES
        ('viewer', 'SCHEMA', 'mvgraph', 'USAGE'),
        ('viewer', 'SCHEMA', 'scheduler', 'USAGE'),
        ('viewer', 'TABLE', 'mvgraph.schema_version', 'SELECT'),
        ('viewer', 'TABLE', 'mvgraph.setting', 'SELECT'),
        ('viewer', 'TABLE', 'mvgraph.mv_state', 'SELECT'),
        ('viewer', 'TABLE', 'mvgraph.table_mode', 'SELECT'),
        ('viewer', 'TABLE', 'mvgraph.change_log', 'SELECT'),
        ('viewer', 'TABLE', 'mvgraph.write_log', 'SELECT'),
        ('viewer', 'TABLE', 'mvgraph.changes', 'SELECT'),
        ('viewer', 'TABLE', 'mvgraph.wal_flush', 'SELECT'),
        ('viewer', 'TABLE', 'mvgraph.daemon', 'SELECT'),
        ('viewer', 'TABLE', 'mvgraph.job', 'SELECT'),
        ('viewer', 'TABLE', 'mvgraph.job_step', 'SELECT'),
        ('viewer', 'TABLE', 'mvgraph.jobs', 'SELECT'),
        ('viewer', 'TABLE', 'mvgraph.schedule', 'SELECT'),
        ('viewer', 'TABLE', 'mvgraph.schedule_slot', 'SELECT'),
        ('viewer', 'TABLE', 'scheduler.pg_task', 'SELECT'),
        ('viewer', 'FUNCTION', 'mvgraph.job_result(bigint)', 'EXECUTE'),
        ('viewer', 'FUNCTION', 'mvgraph.reap_jobs()', 'EXECUTE'),
        ('viewer', 'FUNCTION', 'mvgraph.change_log_intact()', 'EXECUTE'),
        ('viewer', 'FUNCTION', 'mvgraph.write_counters(oid[])', 'EXECUTE'),
        ('viewer', 'FUNCTION', 'mvgraph.purge_jobs(integer)', 'EXECUTE'),
        ('viewer', 'FUNCTION', 'mvgraph.ensure_mv_state(oid[], text[])', 'EXECUTE'),
        ('viewer', 'FUNCTION', 'mvgraph.compact()', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.submit(text)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.enqueue(text, text, jsonb, text, boolean, jsonb)',
         'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.cancel_job(bigint)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.suspend_job(bigint)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.resume_job(bigint)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.write_steps(bigint, integer[], text[], oid[], text[], text[])', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.replan_steps(bigint, text[], oid[], text[], text[])', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.step_running(bigint, integer)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.step_finished(bigint, integer, text, text, double precision, text, boolean, bigint)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.step_pending(bigint, integer)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.step_started_at(bigint, integer, timestamptz)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.cancel_pending_steps(bigint, text)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.finish_job(bigint, text, text, integer)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.job_request(bigint)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.sql_job_step(bigint, text)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.sql_job_done(bigint, integer, jsonb, double precision, bigint)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.sql_job_result(bigint, integer, jsonb)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.refresh_step(oid, text, bigint, boolean, bigint, integer, text, oid[], oid[], bigint[], bigint[], boolean, timestamptz, integer, name)', 'EXECUTE'),
        ('operator', 'PROCEDURE', 'mvgraph.refresh_batch(bigint, integer, name, jsonb, jsonb)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.begin_own_refresh(oid)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.record_refresh(oid, text, pg_snapshot, double precision, oid[], oid[], bigint[], bigint[], bigint, integer, text, boolean, timestamptz)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.keep_compaction_away()', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.configure_view(oid, boolean, text)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.set_table_mode(oid, text, text)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.clear_table_mode(oid)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.log_tracking_start(oid[])', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.create_schedule(text, oid, text, text, timestamptz, interval, text, text, text, interval, text, timestamptz, text)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.alter_schedule(bigint, text, text, timestamptz, interval, text, text, text, interval, text, timestamptz, text)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.drop_schedule(bigint)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.drop_orphan_schedules()', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.set_schedule_enabled(bigint, boolean, timestamptz)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.set_next_run(bigint, timestamptz)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.claim_slot(bigint, timestamptz, text, bigint, boolean, text, text)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.set_slot_job(bigint, timestamptz, bigint)', 'EXECUTE'),
        ('operator', 'TABLE', 'mvgraph.wal_flush', 'INSERT, UPDATE, DELETE'),
        ('worker', 'FUNCTION', 'mvgraph.claim_jobs(text, double precision, integer)', 'EXECUTE'),
        ('worker', 'FUNCTION', 'mvgraph.claim_job(text, double precision)', 'EXECUTE'),
        ('worker', 'FUNCTION', 'mvgraph.job_heartbeat(bigint, integer, double precision)', 'EXECUTE'),
        ('worker', 'FUNCTION', 'mvgraph.submit_for_schedules(bigint[], text, jsonb, text)', 'EXECUTE'),
        ('worker', 'FUNCTION', 'mvgraph.schedule_ends()', 'EXECUTE'),
        ('worker', 'FUNCTION', 'mvgraph.schedule_run_ended(bigint, timestamptz, timestamptz, text, text)', 'EXECUTE'),
        ('worker', 'FUNCTION', 'mvgraph.waiting_slots()', 'EXECUTE'),
        ('worker', 'FUNCTION', 'mvgraph.drop_waiting_slot(bigint, timestamptz, text)', 'EXECUTE'),
        ('worker', 'FUNCTION', 'mvgraph.daemon_register(text, text, integer, integer, text)', 'EXECUTE'),
        ('worker', 'FUNCTION', 'mvgraph.daemon_heartbeat(bigint, integer)', 'EXECUTE'),
        ('worker', 'FUNCTION', 'mvgraph.daemon_remove(bigint)', 'EXECUTE'),
        ('admin', 'FUNCTION', 'mvgraph.put_setting(text, text)', 'EXECUTE'),
        ('admin', 'TABLE', 'mvgraph.privilege', 'SELECT'),
        ('admin', 'FUNCTION', 'mvgraph.pause_all_schedules()', 'EXECUTE'),
        ('admin', 'FUNCTION', 'mvgraph.grant_privileges(name, text, boolean)', 'EXECUTE'),
        ('admin', 'FUNCTION', 'mvgraph.revoke_privileges(name, boolean)', 'EXECUTE')
      ) AS g(level, kind, object, privilege)
     WHERE g.level = wanted
        OR (wanted IN ('operator', 'worker') AND g.level = 'viewer')
        OR (wanted = 'worker' AND g.level = 'operator')
        OR wanted = 'admin'
$$;

REVOKE ALL ON mvgraph.own_refresh FROM PUBLIC;
REVOKE ALL ON FUNCTION mvgraph.content_fingerprint(oid), mvgraph.begin_own_refresh(oid),
    mvgraph.record_refresh(oid, text, pg_snapshot, double precision, oid[], oid[], bigint[],
                           bigint[], bigint, integer, text, boolean, timestamptz),
    mvgraph.ensure_mv_state(oid[], text[]), mvgraph.configure_view(oid, boolean, text),
    mvgraph.set_table_mode(oid, text, text), mvgraph.clear_table_mode(oid),
    mvgraph.log_tracking_start(oid[]), mvgraph.keep_compaction_away(), mvgraph.compact()
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mvgraph.own_refresh_of(oid), mvgraph.own_table(oid) TO PUBLIC;

-- Roles granted a level before: the rights on the refresh state taken back, the new functions
-- given (grant_privileges revokes every right of the old list first).
DO $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT role, level FROM mvgraph.privilege
              WHERE EXISTS (SELECT FROM pg_roles r WHERE r.rolname = role) LOOP
        EXECUTE format('REVOKE INSERT, UPDATE, DELETE ON mvgraph.mv_state, mvgraph.change_log, '
                       'mvgraph.write_log, mvgraph.table_mode FROM %I', p.role);
        PERFORM mvgraph.grant_privileges(p.role, p.level);
    END LOOP;
END
$$;
