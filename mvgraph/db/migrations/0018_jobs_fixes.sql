-- Fixes to background jobs (issue 18, items 6, 7, 10, 11, 16).
--
-- * Cancelling a background CREATE MATERIALIZED VIEW removes the view it created (RisingWave:
--   a cancelled background creation leaves nothing), with the submitter's rights, never the
--   schema owner's: mvgraph.cancel_job is now SECURITY INVOKER; its bookkeeping is
--   mvgraph.cancel_job_request (SECURITY DEFINER, the former cancel_job) and the DROP is
--   mvgraph.drop_cancelled_view, run in the cancelling session when that session acts with the
--   view owner's rights. Otherwise (another role cancels a queued creation) the job is queued
--   again marked drop_on_cancel, and a worker, logged in as the submitter, drops the view and
--   closes the job cancelled. A running creation is dropped by its worker's job connection
--   (the submitter's) once its REFRESH is cancelled.
-- * mvgraph.submit validates a REFRESH at once: the view must exist and be a materialized view.
-- * Progress counts the steps a job did: a cancelled step is not done (a cancelled job no
--   longer shows 1/1 100%).
-- * A step cancelled while running records how long it ran.

-- ---- submit: a REFRESH names an existing materialized view ---------------------------------

CREATE OR REPLACE FUNCTION mvgraph.submit(statement text) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    kind    text := mvgraph.statement_kind(statement);
    body    text;
    before  oid[];
    made    record;
    opts    jsonb := pg_catalog.jsonb_build_object(
                         'search_path', pg_catalog.current_schemas(false)::text[],
                         'search_path_setting', pg_catalog.current_setting('search_path'));
    new_id  bigint;
    named   text[];
    target  regclass;
BEGIN
    PERFORM mvgraph.require_level('operator', 'mvgraph.submit');
    IF statement IS NULL OR statement OPERATOR(pg_catalog.!~) '\S' THEN
        RAISE EXCEPTION 'mvgraph.submit: the statement is empty'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF kind OPERATOR(pg_catalog.=) 'refresh' THEN
        -- Validated now, as a foreground REFRESH is: the view must exist (through the
        -- caller's search_path) and be a materialized view. Whether the caller may refresh it
        -- is PostgreSQL's to say when the job runs.
        named := pg_catalog.regexp_match(statement,
            '^\s*refresh\s+materialized\s+view\s+(?:concurrently\s+)?'
            '((?:"(?:[^"]|"")+"|[^\s.";]+)(?:\s*\.\s*(?:"(?:[^"]|"")+"|[^\s.";]+))?)', 'i');
        IF named IS NOT NULL THEN
            BEGIN
                target := pg_catalog.to_regclass(named[1]);
            EXCEPTION WHEN OTHERS THEN  -- a name PostgreSQL cannot read: the worker's parser says why
                target := NULL;
                named := NULL;
            END;
        END IF;
        IF named IS NOT NULL AND target IS NULL THEN
            RAISE EXCEPTION 'mvgraph.submit: materialized view % does not exist', named[1]
                  USING ERRCODE = 'undefined_table',
                        HINT = 'names resolve through search_path: '
                               OPERATOR(pg_catalog.||) pg_catalog.current_setting('search_path');
        END IF;
        IF target IS NOT NULL AND (SELECT c.relkind FROM pg_catalog.pg_class c
                                    WHERE c.oid OPERATOR(pg_catalog.=) target)
                                  OPERATOR(pg_catalog.<>) 'm' THEN
            RAISE EXCEPTION 'mvgraph.submit: % is not a materialized view', target
                  USING ERRCODE = 'wrong_object_type';
        END IF;
    ELSIF kind OPERATOR(pg_catalog.=) 'create' THEN
        -- Created now WITH NO DATA: its definition persists and its errors are reported here.
        body := pg_catalog.regexp_replace(statement, '\s*;\s*$', '');
        body := pg_catalog.regexp_replace(body, '\s+with\s+(no\s+)?data\s*$', '', 'i');
        SELECT pg_catalog.array_agg(c.oid) INTO before FROM pg_catalog.pg_class c
         WHERE c.relkind OPERATOR(pg_catalog.=) 'm';
        BEGIN
            EXECUTE body OPERATOR(pg_catalog.||) E'\nWITH NO DATA';
        EXCEPTION WHEN OTHERS THEN
            -- the server's message may quote the text, mvgraph's own WITH NO DATA with it: one
            -- line about what the caller wrote
            RAISE EXCEPTION USING ERRCODE = SQLSTATE,
                  MESSAGE = pg_catalog.translate(
                      pg_catalog.replace(SQLERRM, E'\nWITH NO DATA', ''), E'\n\r', '  ');
        END;
        SELECT c.oid, pg_catalog.format('%I.%I', n.nspname, c.relname) AS name INTO made
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n
            ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
         WHERE c.relkind OPERATOR(pg_catalog.=) 'm'
           AND c.oid OPERATOR(pg_catalog.<>) ALL (coalesce(before, '{}'))
           -- made by this transaction (by the block above: a subtransaction of it): another
           -- session's row still in progress is invisible here, so in progress means ours
           AND pg_catalog.pg_xact_status((
                   (pg_catalog.pg_current_xact_id()::text::numeric
                    OPERATOR(pg_catalog.-) (pg_catalog.pg_current_xact_id()::text::numeric
                                            OPERATOR(pg_catalog.%) 4294967296))
                   OPERATOR(pg_catalog.+) c.xmin::text::numeric)::text::xid8)
               OPERATOR(pg_catalog.=) 'in progress'
         LIMIT 1;
        IF NOT FOUND THEN  -- IF NOT EXISTS, and it existed: nothing to populate
            RETURN mvgraph.enqueue('create', statement, opts, NULL, false,
                                   pg_catalog.jsonb_build_object(
                                       'tag', 'CREATE MATERIALIZED VIEW',
                                       'notices', pg_catalog.jsonb_build_array(
                                           'the materialized view already exists; '
                                           'nothing to populate')));
        END IF;
        opts := opts OPERATOR(pg_catalog.||)
                pg_catalog.jsonb_build_object('mv', made.oid::bigint, 'name', made.name);
    END IF;
    new_id := mvgraph.enqueue(kind, statement, opts);
    PERFORM pg_catalog.pg_notify('mvgraph_jobs', new_id::text);
    RETURN new_id;
END
$$;

-- ---- cancel: a background creation leaves nothing -----------------------------------------

-- The bookkeeping of a cancel (0015's cancel_job), for the caller's own jobs (administrators
-- and workers: any). A queued or suspended creation whose view the caller may not drop (it does
-- not have the view owner's rights) goes back to the queue marked drop_on_cancel: a worker
-- logged in as its submitter drops the view and closes it ('cancelling' until then).
CREATE FUNCTION mvgraph.cancel_job_request(job_id bigint) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j mvgraph.job_data;
    s record;
    view_owner oid;
BEGIN
    j := mvgraph.job_for_update(job_id);
    IF j.status IN ('queued', 'suspended') AND j.kind = 'create' AND j.options ? 'mv' THEN
        SELECT c.relowner INTO view_owner FROM pg_class c
         WHERE c.oid = (j.options ->> 'mv')::oid AND c.relkind = 'm';
        IF FOUND AND NOT pg_has_role(mvgraph.actor(), view_owner, 'USAGE') THEN
            UPDATE mvgraph.job_data
               SET status = 'queued', background = true, request = 'cancel',
                   options = options || '{"drop_on_cancel": true}'::jsonb
             WHERE id = j.id;
            PERFORM pg_notify('mvgraph_jobs', j.id::text);
            RETURN 'cancelling';
        END IF;
    END IF;
    IF j.status IN ('queued', 'suspended') THEN
        UPDATE mvgraph.job_step_data st
           SET status = 'cancelled', reason = 'job cancelled before this step',
               finished_at = clock_timestamp()
         WHERE st.job_id = j.id AND st.status IN ('pending', 'running');
        UPDATE mvgraph.job_data SET status = 'cancelled', request = NULL, lease_until = NULL,
               finished_at = clock_timestamp() WHERE id = j.id;
        RETURN 'cancelled';
    ELSIF j.status <> 'running' THEN
        RETURN j.status;
    END IF;
    UPDATE mvgraph.job_data SET request = 'cancel' WHERE id = j.id;
    -- only backends that run this job now, logged in as its login
    FOR s IN SELECT DISTINCT st.backend_pid FROM mvgraph.job_step_data st
               JOIN pg_stat_activity a ON a.pid = st.backend_pid AND a.usename = j.login
              WHERE st.job_id = j.id AND st.status = 'running' LOOP
        BEGIN
            PERFORM pg_cancel_backend(s.backend_pid);
        EXCEPTION WHEN insufficient_privilege THEN
            NULL;  -- the runner sees the request at its next step
        END;
    END LOOP;
    RETURN 'cancelling';
END
$$;

-- Drop the view a cancelled background creation made, with the caller's own rights (SECURITY
-- INVOKER: the cancelling session, or the worker's connection logged in as the submitter).
-- Only the job's own view (its oid, still under its name) and only RESTRICT: a view someone
-- built on it meanwhile keeps it (a notice says so). Returns the view's name when dropped.
CREATE FUNCTION mvgraph.drop_cancelled_view(job_id bigint) RETURNS text
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j record;
    target regclass;
BEGIN
    SELECT v.kind, v.status, v.options INTO j FROM mvgraph.job v WHERE v.id = job_id;
    IF NOT FOUND OR j.kind <> 'create' OR j.status <> 'cancelled' OR NOT j.options ? 'mv' THEN
        RETURN NULL;
    END IF;
    SELECT c.oid::regclass INTO target
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = (j.options ->> 'mv')::oid AND c.relkind = 'm'
       AND format('%I.%I', n.nspname, c.relname) = j.options ->> 'name';
    IF NOT FOUND THEN  -- gone already, or renamed since (no longer what the job made)
        RETURN NULL;
    END IF;
    BEGIN
        EXECUTE format('DROP MATERIALIZED VIEW %s', target);
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'job %: materialized view % was left in place: %', job_id, target, SQLERRM;
        RETURN NULL;
    END;
    RETURN j.options ->> 'name';
END
$$;

-- What `mvgraph cancel`, CANCEL JOBS and the SQL API call: the bookkeeping, then (a creation
-- cancelled) the DROP of its view in the caller's session, with the caller's rights.
CREATE OR REPLACE FUNCTION mvgraph.cancel_job(job_id bigint) RETURNS text
LANGUAGE plpgsql SECURITY INVOKER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    st text := mvgraph.cancel_job_request(job_id);
BEGIN
    IF st = 'cancelled' THEN
        PERFORM mvgraph.drop_cancelled_view(job_id);
    END IF;
    RETURN st;
END
$$;

-- ---- progress: the steps a job did ----------------------------------------------------------

CREATE OR REPLACE VIEW mvgraph.jobs AS
SELECT j.id, j.kind, j.statement, j.status, j.request,
       coalesce(s.done, 0) AS done_steps, coalesce(s.total, 0) AS total_steps,
       j.submitted_at, j.started_at, j.finished_at, j.owner, j.worker, j.error
  FROM mvgraph.job j
  LEFT JOIN LATERAL (
       SELECT count(*) FILTER (WHERE st.status NOT IN ('pending', 'running', 'cancelled'))
                  AS done,
              count(*) AS total
         FROM mvgraph.job_step_data st WHERE st.job_id = j.id) s ON true;

-- A step cancelled while running records how long it ran (a caller that measured nothing
-- passes 0: the time since the step started counts).
CREATE OR REPLACE FUNCTION mvgraph.step_finished(job bigint, step_seq integer, step_status text,
                                                 step_reason text, took double precision,
                                                 step_error text, was_concurrent boolean,
                                                 affected bigint DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.job_to_run(job);
    UPDATE mvgraph.job_step_data
       SET status = step_status, reason = step_reason, finished_at = clock_timestamp(),
           duration_s = CASE WHEN step_status = 'cancelled' AND coalesce(took, 0) = 0
                              AND status = 'running' AND started_at IS NOT NULL
                             THEN extract(epoch FROM clock_timestamp() - started_at)::float8
                             ELSE took END,
           error = step_error, concurrent = was_concurrent,
           rows_affected = coalesce(affected, rows_affected),
           started_at = coalesce(started_at, clock_timestamp()),
           backend_pid = coalesce(backend_pid, pg_backend_pid())
     WHERE job_id = job AND seq = step_seq;
END
$$;

CREATE OR REPLACE FUNCTION mvgraph.cancel_pending_steps(job bigint, why text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.job_to_run(job);
    UPDATE mvgraph.job_step_data
       SET status = 'cancelled', finished_at = clock_timestamp(), reason = why,
           duration_s = CASE WHEN status = 'running' AND started_at IS NOT NULL
                             THEN extract(epoch FROM clock_timestamp() - started_at)::float8
                             ELSE duration_s END
     WHERE job_id = job AND status IN ('pending', 'running');
END
$$;

-- ---- the levels, with the new functions ----------------------------------------------------

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
        ('operator', 'FUNCTION', 'mvgraph.cancel_job_request(bigint)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.drop_cancelled_view(bigint)', 'EXECUTE'),
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

REVOKE ALL ON FUNCTION mvgraph.cancel_job_request(bigint), mvgraph.drop_cancelled_view(bigint)
    FROM PUBLIC;

DO $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT role, level FROM mvgraph.privilege
              WHERE EXISTS (SELECT FROM pg_roles r WHERE r.rolname = role) LOOP
        PERFORM mvgraph.grant_privileges(p.role, p.level);
    END LOOP;
END
$$;
