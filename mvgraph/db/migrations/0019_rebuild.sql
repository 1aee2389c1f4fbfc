-- Rebuild (SPEC section 6, Hologres' ASYNC REBUILD): a 'rebuild' job changes a table's
-- structure or a materialized view's query online, its dependent views included. Its steps
-- carry progress (m/n), a message and their own state (the copy's position); the temporary
-- objects a rebuild made are recorded as they are made (in the same transaction), so that
-- mvgraph.clean_rebuild_tmp_tables removes exactly them and nothing else.
--
-- Also: the privileges each level grants are rows of mvgraph.level_grant (they were restated
-- whole by three migrations); later migrations add rows.

ALTER TABLE mvgraph.job_data
    DROP CONSTRAINT job_kind_check,
    ADD CONSTRAINT job_kind_check CHECK (kind IN ('refresh', 'sql', 'create', 'rebuild')),
    DROP CONSTRAINT job_request_check,
    ADD CONSTRAINT job_request_check CHECK (request IN ('cancel', 'suspend', 'resume')),
    ADD COLUMN paused boolean NOT NULL DEFAULT false;  -- a rebuild waiting for RESUME

ALTER TABLE mvgraph.job_step_data
    ADD COLUMN progress_done  integer,
    ADD COLUMN progress_total integer,
    ADD COLUMN message        text,
    ADD COLUMN state          jsonb;

CREATE TABLE mvgraph.rebuild_object_data (
    job_id   bigint NOT NULL REFERENCES mvgraph.job_data (id) ON DELETE CASCADE,
    seq      bigserial,
    kind     text NOT NULL CHECK (kind IN ('relation', 'function', 'trigger')),
    obj      oid NOT NULL,      -- the relation's or function's oid; a trigger's table
    schema   name NOT NULL,
    name     name NOT NULL,     -- a trigger's own name
    PRIMARY KEY (job_id, seq)
);

CREATE OR REPLACE FUNCTION mvgraph.statement_kind(statement text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN statement ~* '^\s*refresh\s+materialized\s+view\s'
             AND statement !~* '\swith\s+(no\s+)?data\s*;?\s*$' THEN 'refresh'
        WHEN statement ~* '^\s*create\s+materialized\s+view\s' THEN 'create'
        WHEN statement ~* '^\s*(async\s+)?rebuild\s+(table|materialized\s+view)\s' THEN 'rebuild'
        ELSE 'sql' END
$$;

-- A step's progress (m of n), message and state; NULL keeps what is there.
CREATE FUNCTION mvgraph.step_progress(job bigint, step_seq integer, done integer,
                                      total integer, step_message text, step_state jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.job_to_run(job);
    UPDATE mvgraph.job_step_data
       SET progress_done = coalesce(done, progress_done),
           progress_total = coalesce(total, progress_total),
           message = coalesce(step_message, message),
           state = coalesce(step_state, state)
     WHERE job_id = job AND seq = step_seq;
END
$$;

-- The backend doing a step's work when it is not the caller's (a rebuild writes its progress
-- on a second session): what a cancel interrupts. Only a session of the job's own login.
CREATE FUNCTION mvgraph.step_backend(job bigint, step_seq integer, pid integer) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j mvgraph.job_data := mvgraph.job_to_run(job);
BEGIN
    IF NOT EXISTS (SELECT FROM pg_stat_activity a
                    WHERE a.pid = step_backend.pid AND a.usename = session_user
                      AND a.usename IN (j.login, j.owner)) THEN
        RAISE EXCEPTION 'step_backend: backend % is not a session of the job''s login', pid
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE mvgraph.job_step_data SET backend_pid = step_backend.pid
     WHERE job_id = job AND seq = step_seq;
END
$$;

-- The job when the caller may see it (its owner's roles, administrators, workers).
CREATE FUNCTION mvgraph.job_to_see(job_id bigint) RETURNS mvgraph.job_data
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j mvgraph.job_data;
BEGIN
    SELECT * INTO j FROM mvgraph.job_data d WHERE d.id = job_id;
    IF NOT FOUND OR NOT (mvgraph.sees_all() OR mvgraph.acts_as(j.owner)) THEN
        RAISE EXCEPTION 'no job %', job_id USING ERRCODE = 'no_data_found',
              HINT = 'list jobs with mvgraph jobs or SELECT * FROM mvgraph.jobs';
    END IF;
    RETURN j;
END
$$;

-- A rebuild's steps with their progress and state, for its runner and for rebuild_progress.
CREATE FUNCTION mvgraph.rebuild_steps(job bigint)
RETURNS TABLE (seq integer, name text, status text, progress_done integer,
               progress_total integer, message text, state jsonb, started_at timestamptz,
               finished_at timestamptz, backend_pid integer, error text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.job_to_see(job);
    RETURN QUERY SELECT s.seq, s.name, s.status, s.progress_done, s.progress_total, s.message,
                        s.state, s.started_at, s.finished_at, s.backend_pid, s.error
                   FROM mvgraph.job_step_data s WHERE s.job_id = job ORDER BY s.seq;
END
$$;

-- Hologres' rebuild_progress: one row per step, status done / doing / NULL / error, progress
-- m/n ('-' for a step that does not apply).
CREATE FUNCTION mvgraph.rebuild_progress(query_id text)
RETURNS TABLE (job_name text, step_id integer, step text, status text, progress text,
               start_time timestamptz, end_time timestamptz, pid integer, message text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    id bigint;
    j  mvgraph.job_data;
BEGIN
    IF query_id !~ '^\s*\d{1,18}\s*$' THEN
        RAISE EXCEPTION 'rebuild_progress: % is not a job id', quote_literal(query_id)
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'pass the id ASYNC REBUILD returned, e.g. rebuild_progress(''42'')';
    END IF;
    id := btrim(query_id)::bigint;
    j := mvgraph.job_to_see(id);
    IF j.kind <> 'rebuild' THEN
        RAISE EXCEPTION 'job % is not a rebuild', id USING ERRCODE = 'wrong_object_type',
              HINT = 'its steps are in mvgraph.job_step';
    END IF;
    IF NOT EXISTS (SELECT FROM mvgraph.job_step_data s WHERE s.job_id = id) THEN
        -- not started yet: the steps it will run (mvgraph/rebuild/book.py names them too)
        RETURN QUERY
        SELECT id::text, n.ord::integer, n.name, NULL::text, '0/1', NULL::timestamptz,
               NULL::timestamptz, NULL::integer,
               CASE WHEN n.ord = 1 THEN 'job ' || j.status || CASE WHEN j.status = 'queued'
                                              THEN ': waiting for a worker' ELSE '' END END
          FROM unnest(CASE WHEN j.statement ~* '^\s*(async\s+)?rebuild\s+table\s'
                      THEN ARRAY['prepare', 'create_tmp_table', 'get_src_table_snapshot',
                                 'insert', 'set_readonly', 'check_snapshot', 're-insert',
                                 'check_additional_child_table',
                                 'create_additional_child_table',
                                 'insert_additional_child_table', 'swap', 'cleanup']
                      ELSE ARRAY['prepare', 'create_tmp_table', 'insert', 'swap', 'cleanup']
                      END) WITH ORDINALITY AS n(name, ord);
        RETURN;
    END IF;
    RETURN QUERY
    SELECT id::text, s.seq, s.name,
           CASE s.status WHEN 'done' THEN 'done' WHEN 'running' THEN 'doing'
                         WHEN 'failed' THEN 'error' WHEN 'cancelled' THEN 'error' END,
           CASE WHEN s.status = 'skipped' THEN '-'
                ELSE coalesce(s.progress_done, CASE WHEN s.status = 'done' THEN 1 ELSE 0 END)
                     || '/' || coalesce(s.progress_total, 1) END,
           s.started_at, s.finished_at, s.backend_pid,
           coalesce(s.error, s.message)
      FROM mvgraph.rebuild_steps(id) s;
END
$$;

-- A temporary object a rebuild made (called in the transaction that made it).
CREATE FUNCTION mvgraph.rebuild_made(job bigint, object_kind text, object_oid oid,
                                     object_schema name, object_name name)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.job_to_run(job);
    INSERT INTO mvgraph.rebuild_object_data (job_id, kind, obj, schema, name)
    VALUES (job, object_kind, object_oid, object_schema, object_name);
END
$$;

-- The swap made the temporary objects the real ones (or dropped them): forget them all.
CREATE FUNCTION mvgraph.rebuild_forget(job bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.job_to_run(job);
    DELETE FROM mvgraph.rebuild_object_data o WHERE o.job_id = job;
END
$$;

-- The temporary objects of a rebuild that still exist as they were made, newest first.
CREATE FUNCTION mvgraph.rebuild_objects(job bigint)
RETURNS TABLE (kind text, obj oid, schema name, name name)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.job_to_see(job);
    RETURN QUERY
    SELECT o.kind, o.obj, o.schema, o.name FROM mvgraph.rebuild_object_data o
     WHERE o.job_id = job
       AND CASE o.kind
           WHEN 'relation' THEN EXISTS (SELECT FROM pg_class c JOIN pg_namespace n
                                          ON n.oid = c.relnamespace
                                         WHERE c.oid = o.obj AND c.relname = o.name
                                           AND n.nspname = o.schema)
           WHEN 'function' THEN EXISTS (SELECT FROM pg_proc p JOIN pg_namespace n
                                          ON n.oid = p.pronamespace
                                         WHERE p.oid = o.obj AND p.proname = o.name
                                           AND n.nspname = o.schema)
           ELSE EXISTS (SELECT FROM pg_trigger t WHERE t.tgrelid = o.obj AND t.tgname = o.name)
           END
     ORDER BY o.seq DESC;
END
$$;

-- A rebuild paused after set_readonly (binlog_mode) or going on.
CREATE FUNCTION mvgraph.rebuild_pause(job bigint, on_off boolean) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.job_to_run(job);
    UPDATE mvgraph.job_data
       SET paused = on_off, request = CASE WHEN request = 'resume' THEN NULL ELSE request END
     WHERE id = job;
END
$$;

-- A pause belongs to the attempt that paused: a job that stops running (a worker killed while
-- paused: its lock died with its session; reaped, requeued, suspended, ended) or that a worker
-- claims again is not paused, so that RESUME is not taken for that of a pause still to come.
CREATE FUNCTION mvgraph.job_unpause() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.paused := false;
    RETURN NEW;
END
$$;
CREATE TRIGGER job_unpause BEFORE UPDATE OF status, attempt ON mvgraph.job_data FOR EACH ROW
    WHEN (OLD.paused AND (NEW.status <> 'running' OR NEW.attempt <> OLD.attempt))
    EXECUTE FUNCTION mvgraph.job_unpause();

-- Steering (cancel, suspend, resume, cleanup) locks the job's row FOR NO KEY UPDATE (it changes
-- no key): FOR UPDATE also waited for every transaction holding a foreign key reference to the
-- row, and a rebuild's write-block transaction holds one (the temporary objects it records):
-- RESUME waited for the rebuild that waited for RESUME, writers blocked.
CREATE OR REPLACE FUNCTION mvgraph.job_for_update(job_id bigint) RETURNS mvgraph.job_data
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j mvgraph.job_data;
BEGIN
    SELECT * INTO j FROM mvgraph.job_data d WHERE d.id = job_id FOR NO KEY UPDATE;
    IF NOT FOUND OR NOT (mvgraph.sees_all() OR mvgraph.acts_as(j.owner)) THEN
        RAISE EXCEPTION 'no job %', job_id USING ERRCODE = 'no_data_found',
              HINT = 'list jobs with mvgraph jobs or SELECT * FROM mvgraph.jobs';
    END IF;
    RETURN j;
END
$$;

-- RESUME: a suspended job is queued again; a paused rebuild goes on.
CREATE OR REPLACE FUNCTION mvgraph.resume_job(job_id bigint) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j mvgraph.job_data := mvgraph.job_for_update(job_id);
BEGIN
    IF j.status = 'suspended' THEN
        UPDATE mvgraph.job_data SET status = 'queued', background = true, request = NULL
         WHERE id = job_id;
        PERFORM pg_notify('mvgraph_jobs', job_id::text);
        RETURN 'queued';
    ELSIF j.status = 'running' AND j.paused THEN
        UPDATE mvgraph.job_data SET request = 'resume' WHERE id = job_id;
        RETURN 'resuming';
    ELSIF j.status = 'running' THEN  -- a suspend not yet acted upon is withdrawn
        UPDATE mvgraph.job_data SET request = NULL WHERE id = job_id AND request = 'suspend';
    END IF;
    RETURN j.status;
END
$$;

-- After clean_rebuild_tmp_tables: a rebuild not finished is closed, cancelled.
CREATE FUNCTION mvgraph.rebuild_cleaned(job bigint) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j mvgraph.job_data := mvgraph.job_for_update(job);
BEGIN
    IF j.kind <> 'rebuild' THEN
        RAISE EXCEPTION 'job % is not a rebuild', job USING ERRCODE = 'wrong_object_type';
    END IF;
    IF j.status = 'running' THEN
        RAISE EXCEPTION 'rebuild % is running', job USING ERRCODE = 'object_in_use',
              HINT = 'SUSPEND or CANCEL it first, then clean up';
    END IF;
    DELETE FROM mvgraph.rebuild_object_data o WHERE o.job_id = job;
    IF j.status IN ('queued', 'suspended') THEN
        UPDATE mvgraph.job_step_data SET status = 'cancelled', error = 'cleaned up',
               finished_at = clock_timestamp()
         WHERE job_id = job AND status IN ('pending', 'running');
        UPDATE mvgraph.job_data SET status = 'cancelled', error = 'cleaned up',
               finished_at = clock_timestamp(), request = NULL, paused = false
         WHERE id = job;
        RETURN 'cancelled';
    END IF;
    RETURN j.status;
END
$$;

-- Hologres' hg_clean_rebuild_tmp_tables: drop what an interrupted rebuild made, with the
-- caller's rights (PostgreSQL decides who may drop them); only objects still exactly as
-- recorded (same oid, same name) are touched, newest first.
CREATE PROCEDURE mvgraph.clean_rebuild_tmp_tables(query_id text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    id  bigint;
    o   record;
    st  text;
BEGIN
    IF query_id !~ '^\s*\d{1,18}\s*$' THEN
        RAISE EXCEPTION 'clean_rebuild_tmp_tables: % is not a job id', quote_literal(query_id)
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    id := btrim(query_id)::bigint;
    st := (mvgraph.job_to_see(id)).status;
    IF st = 'running' THEN
        RAISE EXCEPTION 'rebuild % is running', id USING ERRCODE = 'object_in_use',
              HINT = 'SUSPEND or CANCEL it first, then clean up';
    END IF;
    FOR o IN SELECT * FROM mvgraph.rebuild_objects(id) LOOP
        IF o.kind = 'trigger' THEN
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', o.name, o.obj::regclass);
        ELSIF o.kind = 'function' THEN
            EXECUTE format('DROP FUNCTION IF EXISTS %I.%I()', o.schema, o.name);
        ELSE
            EXECUTE format('DROP %s IF EXISTS %I.%I',
                           CASE (SELECT c.relkind FROM pg_class c WHERE c.oid = o.obj)
                                WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                ELSE 'TABLE' END, o.schema, o.name);
        END IF;
    END LOOP;
    PERFORM mvgraph.rebuild_cleaned(id);
END
$$;

-- The mvgraph state of rebuilt objects follows them by name (called in the swap, before the
-- originals are dropped, with the new objects' oids): schedules and freshness targets move to
-- the new view; the table's tracking is set up again on the new table by the rebuild;
-- a view's settings (early cutoff, volatility) move to its new version, whose next refresh is
-- never skipped (no snapshot, no inputs, never refreshed).
CREATE FUNCTION mvgraph.rebuild_follow(old_oids oid[], new_oids oid[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.require_level('operator', 'rebuilding');
    IF EXISTS (SELECT FROM unnest(new_oids) n(oid)
                WHERE NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = n.oid
                                     AND pg_has_role(mvgraph.actor(), c.relowner, 'USAGE'))) THEN
        RAISE EXCEPTION 'rebuild_follow: the caller does not own every new relation'
              USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE mvgraph.schedule_data s SET view_oid = p.new
      FROM unnest(old_oids, new_oids) p(old, new) WHERE s.view_oid = p.old;
    -- the old table's tracking ends with it; the rebuild sets the mode up on the new table
    -- (its triggers installed and recorded: a tracking start, so readers refresh once)
    DELETE FROM mvgraph.table_mode m WHERE m.relid = ANY (old_oids);
    DELETE FROM mvgraph.track_trigger t USING unnest(old_oids) o(oid) WHERE t.root = o.oid;
    -- the new views' own rows (their population was recorded as a refresh) give way
    DELETE FROM mvgraph.mv_state s
     USING unnest(old_oids, new_oids) p(old, new)
     WHERE s.mv = p.new AND EXISTS (SELECT FROM mvgraph.mv_state o WHERE o.mv = p.old);
    UPDATE mvgraph.mv_state s
       SET mv = p.new, snapshot = NULL, refresh_xid = NULL, refreshed_at = NULL,
           fingerprint = NULL, inputs = '{}', stat_inputs = '{}', stat_counters = '{}',
           stat_filenodes = '{}'
      FROM unnest(old_oids, new_oids) p(old, new) WHERE s.mv = p.old;
END
$$;

REVOKE ALL ON FUNCTION mvgraph.step_progress(bigint, integer, integer, integer, text, jsonb),
    mvgraph.step_backend(bigint, integer, integer),
    mvgraph.rebuild_steps(bigint), mvgraph.rebuild_made(bigint, text, oid, name, name),
    mvgraph.rebuild_forget(bigint), mvgraph.rebuild_objects(bigint),
    mvgraph.rebuild_pause(bigint, boolean), mvgraph.rebuild_cleaned(bigint),
    mvgraph.rebuild_follow(oid[], oid[]), mvgraph.job_to_see(bigint),
    mvgraph.rebuild_progress(text) FROM PUBLIC;
REVOKE ALL ON PROCEDURE mvgraph.clean_rebuild_tmp_tables(text) FROM PUBLIC;

-- ---- the levels' privileges as rows ----------------------------------------------------------

CREATE TABLE mvgraph.level_grant (
    level     text NOT NULL CHECK (level IN ('viewer', 'operator', 'worker', 'admin')),
    kind      text NOT NULL,
    object    text NOT NULL,
    privilege text NOT NULL,
    PRIMARY KEY (level, kind, object)
);
INSERT INTO mvgraph.level_grant
SELECT 'viewer', g.* FROM mvgraph.level_grants('viewer') g
UNION ALL
SELECT 'operator', g.* FROM (SELECT * FROM mvgraph.level_grants('operator')
                             EXCEPT SELECT * FROM mvgraph.level_grants('viewer')) g
UNION ALL
SELECT 'worker', g.* FROM (SELECT * FROM mvgraph.level_grants('worker')
                           EXCEPT SELECT * FROM mvgraph.level_grants('operator')) g
UNION ALL
SELECT 'admin', g.* FROM (SELECT * FROM mvgraph.level_grants('admin')
                          EXCEPT SELECT * FROM mvgraph.level_grants('worker')) g;

INSERT INTO mvgraph.level_grant (level, kind, object, privilege) VALUES
    ('viewer', 'FUNCTION', 'mvgraph.job_to_see(bigint)', 'EXECUTE'),
    ('viewer', 'FUNCTION', 'mvgraph.rebuild_steps(bigint)', 'EXECUTE'),
    ('viewer', 'FUNCTION', 'mvgraph.rebuild_progress(text)', 'EXECUTE'),
    ('viewer', 'FUNCTION', 'mvgraph.rebuild_objects(bigint)', 'EXECUTE'),
    ('operator', 'FUNCTION', 'mvgraph.step_progress(bigint, integer, integer, integer, text, jsonb)', 'EXECUTE'),
    ('operator', 'FUNCTION', 'mvgraph.step_backend(bigint, integer, integer)', 'EXECUTE'),
    ('operator', 'FUNCTION', 'mvgraph.rebuild_made(bigint, text, oid, name, name)', 'EXECUTE'),
    ('operator', 'FUNCTION', 'mvgraph.rebuild_forget(bigint)', 'EXECUTE'),
    ('operator', 'FUNCTION', 'mvgraph.rebuild_pause(bigint, boolean)', 'EXECUTE'),
    ('operator', 'FUNCTION', 'mvgraph.rebuild_cleaned(bigint)', 'EXECUTE'),
    ('operator', 'FUNCTION', 'mvgraph.rebuild_follow(oid[], oid[])', 'EXECUTE'),
    ('operator', 'PROCEDURE', 'mvgraph.clean_rebuild_tmp_tables(text)', 'EXECUTE');

CREATE OR REPLACE FUNCTION mvgraph.level_grants(wanted text)
RETURNS TABLE (kind text, object text, privilege text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT g.kind, g.object, g.privilege FROM mvgraph.level_grant g
     WHERE g.level = wanted
        OR (wanted IN ('operator', 'worker') AND g.level = 'viewer')
        OR (wanted = 'worker' AND g.level = 'operator')
        OR wanted = 'admin'

$$;

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
