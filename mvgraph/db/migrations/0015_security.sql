-- Security: a job never acts with more rights than its submitter; queue rows are written only
-- through functions; a role sees only its own jobs and schedules unless it is an administrator
-- (or a worker); privilege levels granted by mvgraph.grant_privileges.
--
-- How a job gets its submitter's rights: every job records `owner` (the role it was submitted
-- as) and `login` (the session's login at submit). A worker runs it on a connection that logs
-- in as `login` with the role set to `owner` at connection start; PostgreSQL itself then bounds
-- what the statement can do by that login, whatever it does (SET ROLE, RESET ROLE, SET SESSION
-- AUTHORIZATION, DO blocks, functions). mvgraph's own bookkeeping runs on another connection,
-- or through the SECURITY DEFINER functions below (each with a pinned search_path) on the
-- owner's connection.
--
-- The tables keep their data under new names (job_data, job_step_data, schedule_data,
-- schedule_slot_data); the old names become security-barrier views showing each role its own
-- rows (all rows to administrators and workers). No role but the schema owner has any right on
-- the tables: every write goes through a function here.

-- ---- who is calling ---------------------------------------------------------------------------

-- The role the caller acts as: the SET ROLE value of the session, else its login. Unlike
-- current_user it is the caller's also inside a SECURITY DEFINER function; PostgreSQL lets a
-- session set `role` only to roles its login is a member of.
CREATE FUNCTION mvgraph.actor() RETURNS name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN pg_catalog.current_setting('role') = 'none' THEN session_user
                ELSE pg_catalog.current_setting('role')::name END
$$;

CREATE TABLE mvgraph.privilege (
    role       name PRIMARY KEY,
    level      text NOT NULL CONSTRAINT privilege_level_check
               CHECK (level IN ('viewer', 'operator', 'worker', 'admin')),
    granted_by name NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now()
);

-- Whether the caller has a level (directly or through a role it inherits from): admin has
-- every level, operator and worker include viewer. Superusers and the schema's owner are admins.
CREATE FUNCTION mvgraph.has_level(wanted text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_roles r
                    WHERE r.rolname = mvgraph.actor()
                      AND (r.rolsuper OR pg_has_role(r.oid, (SELECT n.nspowner FROM pg_namespace n
                                                              WHERE n.nspname = 'mvgraph'),
                                                     'USAGE')))
        OR EXISTS (SELECT FROM mvgraph.privilege p JOIN pg_roles r ON r.rolname = p.role
                    WHERE pg_has_role(mvgraph.actor(), r.oid, 'USAGE')
                      AND (p.level = wanted OR p.level = 'admin'
                           OR (wanted = 'viewer' AND p.level IN ('operator', 'worker'))))
$$;

-- Administrators and workers see every job and schedule; everyone else their own.
CREATE FUNCTION mvgraph.sees_all() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT mvgraph.has_level('admin') OR mvgraph.has_level('worker')
$$;

-- The roles whose jobs the caller may see and steer: those it can act as (SET ROLE).
CREATE FUNCTION mvgraph.my_roles() RETURNS SETOF name
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.rolname FROM pg_roles r WHERE pg_has_role(mvgraph.actor(), r.oid, 'MEMBER')
$$;

CREATE FUNCTION mvgraph.acts_as(owner name) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_roles r
                    WHERE r.rolname = owner AND pg_has_role(mvgraph.actor(), r.oid, 'MEMBER'))
$$;

-- Refuse a call the caller's level does not allow (a function shared by several levels).
CREATE FUNCTION mvgraph.require_level(wanted text, what text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF NOT mvgraph.has_level(wanted) THEN
        RAISE EXCEPTION 'permission denied: % needs mvgraph''s % level', what, wanted
              USING ERRCODE = 'insufficient_privilege',
                    HINT = format('an administrator runs: mvgraph grant %s --%s',
                                  mvgraph.actor(), wanted);
    END IF;
END
$$;

-- ---- the tables behind views ------------------------------------------------------------------

DROP VIEW mvgraph.jobs;
DROP VIEW scheduler.pg_task;
ALTER TABLE mvgraph.job RENAME TO job_data;
ALTER TABLE mvgraph.job_step RENAME TO job_step_data;
ALTER TABLE mvgraph.schedule RENAME TO schedule_data;
ALTER TABLE mvgraph.schedule_slot RENAME TO schedule_slot_data;

ALTER TABLE mvgraph.job_data ADD COLUMN login name, ALTER COLUMN owner DROP DEFAULT;
UPDATE mvgraph.job_data SET login = owner;
ALTER TABLE mvgraph.schedule_data ADD COLUMN login name, ALTER COLUMN owner DROP DEFAULT;
UPDATE mvgraph.schedule_data SET login = owner;

-- Rows are inserted only by the functions below, which name the owner; a row without one
-- belongs to the caller.
CREATE OR REPLACE FUNCTION mvgraph.job_owner() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF NEW.owner IS NULL THEN
        NEW.owner := mvgraph.actor();
        NEW.login := session_user;
    END IF;
    NEW.login := coalesce(NEW.login, NEW.owner);
    RETURN NEW;
END
$$;

CREATE VIEW mvgraph.job WITH (security_barrier) AS
SELECT * FROM mvgraph.job_data j
 WHERE (SELECT mvgraph.sees_all()) OR j.owner IN (SELECT mvgraph.my_roles());
CREATE VIEW mvgraph.job_step WITH (security_barrier) AS
SELECT * FROM mvgraph.job_step_data s
 WHERE (SELECT mvgraph.sees_all()) OR s.job_id IN (SELECT j.id FROM mvgraph.job j);
CREATE VIEW mvgraph.schedule WITH (security_barrier) AS
SELECT * FROM mvgraph.schedule_data s
 WHERE (SELECT mvgraph.sees_all()) OR s.owner IN (SELECT mvgraph.my_roles());
CREATE VIEW mvgraph.schedule_slot WITH (security_barrier) AS
SELECT * FROM mvgraph.schedule_slot_data ss
 WHERE (SELECT mvgraph.sees_all()) OR ss.schedule_id IN (SELECT s.id FROM mvgraph.schedule s);

CREATE VIEW mvgraph.jobs AS
SELECT j.id, j.kind, j.statement, j.status, j.request,
       coalesce(s.done, 0) AS done_steps, coalesce(s.total, 0) AS total_steps,
       j.submitted_at, j.started_at, j.finished_at, j.owner, j.worker, j.error
  FROM mvgraph.job j
  LEFT JOIN LATERAL (
       SELECT count(*) FILTER (WHERE st.status NOT IN ('pending', 'running')) AS done,
              count(*) AS total
         FROM mvgraph.job_step_data st WHERE st.job_id = j.id) s ON true;

CREATE VIEW scheduler.pg_task AS
SELECT s.id AS job_id,
       s.what,
       'materialized_view'::text AS category_id,
       s.is_broken,
       coalesce(s.every_text, s.cron, 'target lag ' || s.target_lag::text) AS interval,
       s.behavior,
       s.start_at AS start_date,
       s.next_run AS next_run_date,
       s.last_start AS last_start_date,
       s.last_end AS last_end_date,
       s.failure_count,
       CASE WHEN NOT s.enabled OR s.is_broken THEN 'd'
            WHEN s.last_status = 'failed' THEN 'f' ELSE 's' END AS job_status,
       s.enabled AS enable,
       s.owner AS log_user,
       s.owner AS priv_user,
       pg_catalog.current_database() AS dbname
  FROM mvgraph.schedule s;

-- ---- jobs: steering (operator: own jobs; admin and worker: any) ------------------------------

-- The job row, locked, when the caller may change it; else the one error every job function
-- gives for a job that does not exist (another role's job is not revealed).
CREATE OR REPLACE FUNCTION mvgraph.job_for_update(job_id bigint) RETURNS mvgraph.job_data
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j mvgraph.job_data;
BEGIN
    SELECT * INTO j FROM mvgraph.job_data d WHERE d.id = job_id FOR UPDATE;
    IF NOT FOUND OR NOT (mvgraph.sees_all() OR mvgraph.acts_as(j.owner)) THEN
        RAISE EXCEPTION 'no job %', job_id USING ERRCODE = 'no_data_found',
              HINT = 'list jobs with mvgraph jobs or SELECT * FROM mvgraph.jobs';
    END IF;
    RETURN j;
END
$$;

CREATE OR REPLACE FUNCTION mvgraph.cancel_job(job_id bigint) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j mvgraph.job_data;
    s record;
BEGIN
    j := mvgraph.job_for_update(job_id);
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

CREATE OR REPLACE FUNCTION mvgraph.suspend_job(job_id bigint) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    st text := (mvgraph.job_for_update(job_id)).status;
BEGIN
    IF st = 'queued' THEN
        UPDATE mvgraph.job_data SET status = 'suspended' WHERE id = job_id;
        RETURN 'suspended';
    ELSIF st = 'running' THEN
        UPDATE mvgraph.job_data SET request = 'suspend' WHERE id = job_id AND request IS NULL;
        RETURN 'suspending';
    END IF;
    RETURN st;
END
$$;

CREATE OR REPLACE FUNCTION mvgraph.resume_job(job_id bigint) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    st text := (mvgraph.job_for_update(job_id)).status;
BEGIN
    IF st = 'suspended' THEN
        UPDATE mvgraph.job_data SET status = 'queued', background = true, request = NULL
         WHERE id = job_id;
        PERFORM pg_notify('mvgraph_jobs', job_id::text);
        RETURN 'queued';
    ELSIF st = 'running' THEN  -- a suspend not yet acted upon is withdrawn
        UPDATE mvgraph.job_data SET request = NULL WHERE id = job_id AND request = 'suspend';
    END IF;
    RETURN st;
END
$$;

CREATE OR REPLACE FUNCTION mvgraph.job_result(job_id bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    out jsonb;
BEGIN
    SELECT jsonb_build_object(
               'id', j.id, 'statement', j.statement, 'status', j.status, 'error', j.error,
               'submitted_at', j.submitted_at, 'started_at', j.started_at,
               'finished_at', j.finished_at,
               'steps', coalesce((SELECT jsonb_object_agg(c.status, c.n)
                                    FROM (SELECT st.status, count(*) AS n
                                            FROM mvgraph.job_step_data st WHERE st.job_id = j.id
                                           GROUP BY st.status) c), '{}'::jsonb),
               'result', j.result)
      INTO out
      FROM mvgraph.job j WHERE j.id = job_id;  -- the view: only the caller's jobs
    IF out IS NULL THEN
        RAISE EXCEPTION 'no job %', job_id USING ERRCODE = 'no_data_found',
              HINT = 'list jobs with mvgraph jobs or SELECT * FROM mvgraph.jobs';
    END IF;
    RETURN out;
END
$$;

-- ---- jobs: submitting -------------------------------------------------------------------------

-- Write a new job owned by the caller: queued for a worker (background), or running in the
-- caller's own session (a foreground run, owned through the session-level advisory lock taken
-- here), or done at once (`done_result`: nothing to run). Returns its id.
CREATE FUNCTION mvgraph.enqueue(job_kind text, job_statement text, job_options jsonb,
                                job_host text DEFAULT NULL, foreground boolean DEFAULT false,
                                done_result jsonb DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
BEGIN
    PERFORM mvgraph.require_level('operator', 'submitting a job');
    IF done_result IS NOT NULL THEN
        INSERT INTO mvgraph.job_data (kind, statement, status, background, options, host,
                                      started_at, finished_at, result, owner, login)
        VALUES (job_kind, job_statement, 'done', true, job_options, job_host, now(), now(),
                done_result, mvgraph.actor(), session_user)
        RETURNING id INTO new_id;
    ELSIF foreground THEN
        INSERT INTO mvgraph.job_data (kind, statement, status, options, started_at, pid, host,
                                      owner, login)
        VALUES (job_kind, job_statement, 'running', job_options, now(), pg_backend_pid(),
                job_host, mvgraph.actor(), session_user)
        RETURNING id INTO new_id;
        PERFORM pg_advisory_lock(mvgraph.job_lock_key(new_id));
    ELSE
        INSERT INTO mvgraph.job_data (kind, statement, status, background, options, host,
                                      owner, login)
        VALUES (job_kind, job_statement, 'queued', true, job_options, job_host,
                mvgraph.actor(), session_user)
        RETURNING id INTO new_id;
    END IF;
    RETURN new_id;
END
$$;

-- Queue a statement as a background job; returns its id. SECURITY INVOKER: a CREATE
-- MATERIALIZED VIEW is created here WITH NO DATA with the caller's rights (its errors are the
-- caller's at once); the job row is written by mvgraph.enqueue. Names resolve through the
-- submitter's search_path, recorded here.
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
BEGIN
    PERFORM mvgraph.require_level('operator', 'mvgraph.submit');
    IF statement IS NULL OR statement OPERATOR(pg_catalog.!~) '\S' THEN
        RAISE EXCEPTION 'mvgraph.submit: the statement is empty'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF kind OPERATOR(pg_catalog.=) 'create' THEN
        -- Created now WITH NO DATA: its definition persists and its errors are reported here.
        body := pg_catalog.regexp_replace(statement, '\s*;\s*$', '');
        body := pg_catalog.regexp_replace(body, '\s+with\s+(no\s+)?data\s*$', '', 'i');
        SELECT pg_catalog.array_agg(c.oid) INTO before FROM pg_catalog.pg_class c
         WHERE c.relkind OPERATOR(pg_catalog.=) 'm';
        EXECUTE body OPERATOR(pg_catalog.||) E'\nWITH NO DATA';
        SELECT c.oid, pg_catalog.format('%I.%I', n.nspname, c.relname) AS name INTO made
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n
            ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
         WHERE c.relkind OPERATOR(pg_catalog.=) 'm'
           AND c.oid OPERATOR(pg_catalog.<>) ALL (coalesce(before, '{}'))
           AND c.xmin::text OPERATOR(pg_catalog.=)
               (pg_catalog.pg_current_xact_id()::text::numeric
                OPERATOR(pg_catalog.%) 4294967296)::text
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

-- ---- jobs: running (the runner's session: the owner's own, or a worker's) ---------------------

-- The job row when the caller may write its progress: its owner (or a role acting as it), a
-- worker or an administrator; the job must not have ended.
CREATE FUNCTION mvgraph.job_to_run(job_id bigint) RETURNS mvgraph.job_data
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j mvgraph.job_data;
BEGIN
    SELECT * INTO j FROM mvgraph.job_data d WHERE d.id = job_id;
    IF NOT FOUND OR NOT (mvgraph.acts_as(j.owner) OR mvgraph.sees_all()) THEN
        RAISE EXCEPTION 'no job %', job_id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN j;
END
$$;

CREATE FUNCTION mvgraph.write_steps(job bigint, step_seqs integer[], step_names text[],
                                    step_mvs oid[], step_planned text[], step_reasons text[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.job_to_run(job);
    INSERT INTO mvgraph.job_step_data (job_id, seq, name, mv, planned, reason)
    SELECT job, u.seq, u.name, u.mv, u.planned, u.reason
      FROM unnest(step_seqs, step_names, step_mvs, step_planned, step_reasons)
           AS u(seq, name, mv, planned, reason);
END
$$;

-- A fresh plan of a job: unfinished steps take the new verdicts, new steps are added after the
-- others, unfinished steps no longer in the plan are skipped.
CREATE FUNCTION mvgraph.replan_steps(job bigint, step_names text[], step_mvs oid[],
                                     step_planned text[], step_reasons text[])
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.job_to_run(job);
    UPDATE mvgraph.job_step_data s
       SET planned = p.planned, reason = p.reason, mv = p.mv, status = 'pending',
           started_at = NULL, backend_pid = NULL
      FROM unnest(step_names, step_mvs, step_planned, step_reasons) AS p(name, mv, planned, reason)
     WHERE s.job_id = job AND s.name = p.name AND s.status IN ('pending', 'running');
    UPDATE mvgraph.job_step_data s
       SET status = 'skipped', reason = 'no longer in the plan', finished_at = clock_timestamp()
     WHERE s.job_id = job AND s.status IN ('pending', 'running') AND s.name <> ALL(step_names);
    INSERT INTO mvgraph.job_step_data (job_id, seq, name, mv, planned, reason)
    SELECT job, coalesce((SELECT max(x.seq) FROM mvgraph.job_step_data x WHERE x.job_id = job), 0)
                + row_number() OVER (ORDER BY p.ord),
           p.name, p.mv, p.planned, p.reason
      FROM unnest(step_names, step_mvs, step_planned, step_reasons)
           WITH ORDINALITY AS p(name, mv, planned, reason, ord)
     WHERE NOT EXISTS (SELECT FROM mvgraph.job_step_data s
                        WHERE s.job_id = job AND s.name = p.name);
END
$$;

-- A step starts: others see it running, and whom to cancel (this backend).
CREATE FUNCTION mvgraph.step_running(job bigint, step_seq integer) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.job_to_run(job);
    UPDATE mvgraph.job_step_data
       SET status = 'running', started_at = clock_timestamp(), backend_pid = pg_backend_pid()
     WHERE job_id = job AND seq = step_seq;
END
$$;

CREATE FUNCTION mvgraph.step_finished(job bigint, step_seq integer, step_status text,
                                      step_reason text, took double precision, step_error text,
                                      was_concurrent boolean, affected bigint DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.job_to_run(job);
    UPDATE mvgraph.job_step_data
       SET status = step_status, reason = step_reason, finished_at = clock_timestamp(),
           duration_s = took, error = step_error, concurrent = was_concurrent,
           rows_affected = coalesce(affected, rows_affected),
           started_at = coalesce(started_at, clock_timestamp()),
           backend_pid = coalesce(backend_pid, pg_backend_pid())
     WHERE job_id = job AND seq = step_seq;
END
$$;

-- A step a suspended or requeued run did not finish: it runs again when the job resumes
-- (step_seq NULL: every running step of the job).
CREATE FUNCTION mvgraph.step_pending(job bigint, step_seq integer) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.job_to_run(job);
    UPDATE mvgraph.job_step_data SET status = 'pending', started_at = NULL, backend_pid = NULL
     WHERE job_id = job AND (seq = step_seq OR (step_seq IS NULL AND status = 'running'));
END
$$;

-- Steps not run because the view being created was dropped.
CREATE FUNCTION mvgraph.cancel_pending_steps(job bigint, why text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.job_to_run(job);
    UPDATE mvgraph.job_step_data
       SET status = 'cancelled', finished_at = clock_timestamp(), reason = why
     WHERE job_id = job AND status IN ('pending', 'running');
END
$$;

-- Close (or suspend, or requeue) this attempt of a job; true when it did. Only a running job
-- goes back to the queue (a worker that took a finished job for lost must not run it again),
-- and its interrupted steps run again.
CREATE FUNCTION mvgraph.finish_job(job bigint, job_status text, job_error text,
                                   job_attempt integer)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    n integer;
BEGIN
    PERFORM mvgraph.job_to_run(job);
    IF job_status NOT IN ('queued', 'suspended', 'done', 'failed', 'cancelled') THEN
        RAISE EXCEPTION 'finish_job: % is not an end', job_status
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE mvgraph.job_data
       SET status = job_status, error = job_error, request = NULL, lease_until = NULL,
           finished_at = CASE WHEN job_status IN ('done', 'failed', 'cancelled')
                              THEN clock_timestamp() END,
           worker = CASE WHEN job_status = 'queued' THEN NULL ELSE worker END
     WHERE id = job AND (job_attempt IS NULL OR attempt = job_attempt)
       AND (job_status <> 'queued' OR (status = 'running' AND background));
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 AND job_status = 'queued' THEN
        UPDATE mvgraph.job_step_data SET status = 'pending', started_at = NULL, backend_pid = NULL
         WHERE job_id = job AND status = 'running';
    END IF;
    RETURN n > 0;
END
$$;

-- What was asked of a job, its status and attempt (FOR SHARE: waits for a cancel_job still
-- committing).
CREATE FUNCTION mvgraph.job_request(job bigint)
RETURNS TABLE (request text, status text, attempt integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.job_to_run(job);
    RETURN QUERY SELECT coalesce(j.request, ''), j.status, j.attempt
                   FROM mvgraph.job_data j WHERE j.id = job FOR SHARE;
END
$$;

-- The one step of a background statement (kept when the job runs again).
CREATE FUNCTION mvgraph.sql_job_step(job bigint, step_reason text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.job_to_run(job);
    INSERT INTO mvgraph.job_step_data (job_id, seq, name, mv, planned, reason)
    VALUES (job, 1, 'statement', NULL, 'run', step_reason)
    ON CONFLICT (job_id, seq) DO UPDATE
       SET status = 'pending', started_at = NULL, backend_pid = NULL, error = NULL;
END
$$;

-- A background statement's outcome, with its job done, if the job is still this attempt's and
-- nobody cancelled it (called in the statement's transaction: otherwise it is rolled back).
CREATE FUNCTION mvgraph.sql_job_done(job bigint, job_attempt integer, job_result jsonb,
                                     took double precision, affected bigint)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    n integer;
BEGIN
    PERFORM mvgraph.job_to_run(job);
    UPDATE mvgraph.job_data
       SET status = 'done', result = job_result, error = NULL, request = NULL,
           lease_until = NULL, finished_at = clock_timestamp()
     WHERE id = job AND attempt = job_attempt AND status = 'running'
       AND request IS DISTINCT FROM 'cancel';
    GET DIAGNOSTICS n = ROW_COUNT;
    IF n > 0 THEN
        UPDATE mvgraph.job_step_data
           SET status = 'done', finished_at = clock_timestamp(), duration_s = took,
               rows_affected = affected, error = NULL
         WHERE job_id = job AND seq = 1;
    END IF;
    RETURN n > 0;
END
$$;

CREATE FUNCTION mvgraph.sql_job_result(job bigint, job_attempt integer, job_result jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.job_to_run(job);
    UPDATE mvgraph.job_data SET result = job_result WHERE id = job AND attempt = job_attempt;
END
$$;

-- Refresh one materialized view and record it (0006's, whose step row is now written by a
-- function: the caller has no right on the step table). SECURITY INVOKER: the REFRESH runs with
-- the caller's rights.
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
    fp      text;
    changed boolean := true;
    req     text;
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
    PERFORM pg_advisory_xact_lock(lock_key);
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
    PERFORM set_config('mvgraph.refreshing', 'on', true);  -- the event trigger skips it
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
    PERFORM set_config('mvgraph.refreshing', 'off', true);

    IF state.early_cutoff THEN  -- order-independent content fingerprint: rows and sum of hashes
        EXECUTE format(
            'SELECT count(*)::text || '':'' || '
            'coalesce(sum(pg_catalog.hashtextextended(t::text, 0)::numeric), 0)::text '
            'FROM %s AS t', view_oid::regclass) INTO fp;
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
    RETURN QUERY SELECT 'done'::text, took, changed, step_reason;
END
$$;

CREATE FUNCTION mvgraph.step_started_at(job bigint, step_seq integer, at timestamptz)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.job_to_run(job);
    UPDATE mvgraph.job_step_data SET started_at = at, backend_pid = pg_backend_pid()
     WHERE job_id = job AND seq = step_seq;
END
$$;

-- 0013's batch, with its running marks written through mvgraph.step_running.
CREATE OR REPLACE PROCEDURE mvgraph.refresh_batch(job bigint, job_attempt integer, run_as name,
                                                  steps jsonb, INOUT outcome jsonb DEFAULT NULL)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n        integer := pg_catalog.jsonb_array_length(steps);
    i        integer := 0;
    s        jsonb;
    r        record;
    why      text;
    reason   text;
    changed  text[] := '{}';  -- names refreshed in this batch whose content changed
    done     jsonb := '[]';
    item     jsonb;
    nxt      integer;
BEGIN
    SELECT (x OPERATOR(pg_catalog.->>) 'seq')::integer INTO nxt
      FROM pg_catalog.jsonb_array_elements(steps) x
     WHERE NOT coalesce((x OPERATOR(pg_catalog.->>) 'skip')::boolean, false) LIMIT 1;
    IF nxt IS NOT NULL THEN
        PERFORM mvgraph.step_running(job, nxt);
        COMMIT;
    END IF;
    WHILE i OPERATOR(pg_catalog.<) n LOOP
        s := steps OPERATOR(pg_catalog.->) i;
        IF coalesce((s OPERATOR(pg_catalog.->>) 'skip')::boolean, false) THEN
            IF EXISTS (SELECT FROM pg_catalog.jsonb_array_elements_text(
                                       s OPERATOR(pg_catalog.->) 'after') a(name)
                        WHERE a.name OPERATOR(pg_catalog.=) ANY (changed)) THEN
                why := 'undecided';
                EXIT;
            END IF;
            item := pg_catalog.jsonb_build_object('event', 'finished',
                                                  'seq', s OPERATOR(pg_catalog.->) 'seq',
                                                  'outcome', 'skipped');
            done := done OPERATOR(pg_catalog.||) item;
            RAISE NOTICE USING MESSAGE = 'mvgraph step', DETAIL = item::text;
            i := i OPERATOR(pg_catalog.+) 1;
            CONTINUE;
        END IF;
        reason := s OPERATOR(pg_catalog.->>) 'reason';
        IF reason IS NULL THEN  -- refreshed only after an upstream step of this batch changed
            SELECT a.name INTO reason
              FROM pg_catalog.jsonb_array_elements_text(s OPERATOR(pg_catalog.->) 'after')
                   WITH ORDINALITY a(name, k)
             WHERE a.name OPERATOR(pg_catalog.=) ANY (changed) ORDER BY a.k LIMIT 1;
            IF reason IS NULL THEN
                why := 'undecided';
                EXIT;
            END IF;
            reason := pg_catalog.format('input %s was refreshed earlier in this run', reason);
        END IF;
        RAISE NOTICE USING MESSAGE = 'mvgraph step',
              DETAIL = pg_catalog.jsonb_build_object('event', 'started',
                                                     'seq', s OPERATOR(pg_catalog.->) 'seq')::text;
        LOCK TABLE mvgraph.mv_state IN ROW EXCLUSIVE MODE;
        SELECT * INTO r
          FROM mvgraph.refresh_step(
                   (s OPERATOR(pg_catalog.->>) 'oid')::oid, s OPERATOR(pg_catalog.->>) 'name',
                   (s OPERATOR(pg_catalog.->>) 'key')::bigint,
                   (s OPERATOR(pg_catalog.->>) 'concurrently')::boolean, job,
                   (s OPERATOR(pg_catalog.->>) 'seq')::integer, reason,
                   ARRAY(SELECT pg_catalog.jsonb_array_elements_text(
                                    s OPERATOR(pg_catalog.->) 'inputs'))::oid[],
                   ARRAY(SELECT pg_catalog.jsonb_array_elements_text(
                                    s OPERATOR(pg_catalog.->) 'stats'))::oid[],
                   NULL, NULL, (s OPERATOR(pg_catalog.->>) 'check')::boolean,
                   (s OPERATOR(pg_catalog.->>) 'seen')::timestamptz, job_attempt, run_as);
        IF r.outcome OPERATOR(pg_catalog.=) 'raced' THEN  -- nothing changed: the client decides
            COMMIT;
            why := 'raced';
            EXIT;
        END IF;
        IF r.content_changed THEN
            changed := changed OPERATOR(pg_catalog.||) (s OPERATOR(pg_catalog.->>) 'name');
        END IF;
        nxt := NULL;  -- the next step to refresh: its running mark commits with this step
        SELECT (x.v OPERATOR(pg_catalog.->>) 'seq')::integer INTO nxt
          FROM pg_catalog.jsonb_array_elements(steps) WITH ORDINALITY x(v, k)
         WHERE x.k OPERATOR(pg_catalog.>) (i OPERATOR(pg_catalog.+) 1)
           AND NOT coalesce((x.v OPERATOR(pg_catalog.->>) 'skip')::boolean, false)
         ORDER BY x.k LIMIT 1;
        IF nxt IS NOT NULL AND job IS NOT NULL THEN
            PERFORM mvgraph.step_running(job, nxt);
        END IF;
        COMMIT;
        item := pg_catalog.jsonb_build_object(
            'event', 'finished', 'seq', s OPERATOR(pg_catalog.->) 'seq', 'outcome', r.outcome,
            'took', r.duration_s, 'changed', r.content_changed, 'reason', r.recorded_reason);
        done := done OPERATOR(pg_catalog.||) item;
        RAISE NOTICE USING MESSAGE = 'mvgraph step', DETAIL = item::text;
        i := i OPERATOR(pg_catalog.+) 1;
    END LOOP;
    outcome := pg_catalog.jsonb_build_object(
        'done', done,
        'stopped', CASE WHEN i OPERATOR(pg_catalog.<) n
                        THEN steps OPERATOR(pg_catalog.->) i OPERATOR(pg_catalog.->) 'seq' END,
        'why', why);
END
$$;

-- ---- jobs: workers ----------------------------------------------------------------------------

-- Close or requeue running jobs whose owner is gone: a foreground run whose lock is free
-- (failed: process lost), a worker's job whose lease expired (queued again, from its first
-- unfinished step; cancelled or suspended if that had been asked). Leases are written only by
-- claim and heartbeat (workers). Callers other than workers and administrators reap their own.
CREATE OR REPLACE FUNCTION mvgraph.reap_jobs() RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j record;
    n integer := 0;
BEGIN
    FOR j IN SELECT id, background, request FROM mvgraph.job
              WHERE status = 'running'
                AND CASE WHEN background THEN coalesce(lease_until < now(), true)
                         ELSE pid IS DISTINCT FROM pg_backend_pid()
                              AND pg_try_advisory_xact_lock(mvgraph.job_lock_key(id))
                    END
              ORDER BY id
                FOR UPDATE SKIP LOCKED LOOP
        IF j.background AND j.request IS DISTINCT FROM 'cancel' THEN
            UPDATE mvgraph.job_step_data SET status = 'pending', started_at = NULL,
                   backend_pid = NULL
             WHERE job_id = j.id AND status = 'running';
            UPDATE mvgraph.job_data
               SET status = CASE WHEN j.request = 'suspend' THEN 'suspended' ELSE 'queued' END,
                   worker = NULL, lease_until = NULL, pid = NULL, request = NULL,
                   error = 'worker lost; requeued from the first unfinished step'
             WHERE id = j.id;
        ELSE
            UPDATE mvgraph.job_step_data
               SET status = 'cancelled', finished_at = clock_timestamp(), error = 'process lost'
             WHERE job_id = j.id AND status IN ('pending', 'running');
            UPDATE mvgraph.job_data
               SET status = CASE WHEN j.request = 'cancel' THEN 'cancelled' ELSE 'failed' END,
                   finished_at = clock_timestamp(), lease_until = NULL,
                   error = 'process lost: the session running this job ended before it finished'
             WHERE id = j.id;
        END IF;
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

DROP FUNCTION mvgraph.claim_job(text, double precision);
DROP FUNCTION mvgraph.claim_jobs(text, double precision, integer);

-- Claim up to `wanted` queued jobs, oldest first, within max_concurrent_jobs across every worker
-- (claims serialised by a transaction-level advisory lock). Workers only; a lease is at most
-- an hour.
CREATE FUNCTION mvgraph.claim_jobs(worker_name text, lease_s double precision, wanted integer)
RETURNS SETOF mvgraph.job_data
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    cap  integer;
    busy integer;
BEGIN
    PERFORM mvgraph.require_level('worker', 'claiming jobs');
    PERFORM mvgraph.reap_jobs();
    PERFORM pg_advisory_xact_lock(mvgraph.job_lock_key(0));
    cap := coalesce((SELECT value::integer FROM mvgraph.setting WHERE key = 'max_concurrent_jobs'), 4);
    SELECT count(*) INTO busy FROM mvgraph.job_data WHERE status = 'running' AND background;
    IF busy >= cap OR wanted < 1 THEN
        RETURN;
    END IF;
    RETURN QUERY
    UPDATE mvgraph.job_data u
       SET status = 'running', background = true, worker = worker_name, attempt = u.attempt + 1,
           lease_until = now() + make_interval(secs => least(greatest(lease_s, 1), 3600)),
           started_at = coalesce(u.started_at, now()), pid = pg_backend_pid(),
           request = NULL, error = NULL
      FROM (SELECT id FROM mvgraph.job_data WHERE status = 'queued' ORDER BY id
               FOR UPDATE SKIP LOCKED LIMIT least(wanted, cap - busy)) q
     WHERE u.id = q.id
    RETURNING u.*;
END
$$;

CREATE FUNCTION mvgraph.claim_job(worker_name text, lease_s double precision)
RETURNS SETOF mvgraph.job_data
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT * FROM mvgraph.claim_jobs(worker_name, lease_s, 1)
$$;

CREATE OR REPLACE FUNCTION mvgraph.job_heartbeat(job_id bigint, job_attempt integer,
                                                 lease_s double precision)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    req text;
BEGIN
    PERFORM mvgraph.require_level('worker', 'renewing a lease');
    UPDATE mvgraph.job_data j
       SET lease_until = now() + make_interval(secs => least(greatest(lease_s, 1), 3600))
     WHERE j.id = job_id AND j.attempt = job_attempt AND j.status = 'running'
    RETURNING coalesce(j.request, '') INTO req;
    RETURN coalesce(req, 'lost');
END
$$;

-- Finished jobs older than the retention (days; the setting when not given): every job for
-- administrators and workers, the caller's own for others. Returns how many.
CREATE FUNCTION mvgraph.purge_jobs(days integer) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    n bigint;
BEGIN
    DELETE FROM mvgraph.job_data j
     WHERE j.finished_at < now() - make_interval(days => coalesce(days,
           (SELECT value::int FROM mvgraph.setting WHERE key = 'retention_days'), 7))
       AND j.id IN (SELECT v.id FROM mvgraph.job v);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- ---- schedules --------------------------------------------------------------------------------

-- Whether the caller may refresh a materialized view: it can act as its owner, or (PostgreSQL
-- 17 and later) holds MAINTAIN on it.
CREATE FUNCTION mvgraph.may_refresh(view_oid oid) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    owner_oid oid;
BEGIN
    SELECT c.relowner INTO owner_oid FROM pg_class c WHERE c.oid = view_oid AND c.relkind = 'm';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF pg_has_role(mvgraph.actor(), owner_oid, 'MEMBER') THEN
        RETURN true;
    END IF;
    IF current_setting('server_version_num')::int >= 170000 THEN
        RETURN has_table_privilege(mvgraph.actor(), view_oid, 'MAINTAIN');
    END IF;
    RETURN false;
END
$$;

-- The schedule row when the caller may change it (its owner or an administrator; `daemon`:
-- also a worker, for what daemons write).
CREATE FUNCTION mvgraph.schedule_for_update(schedule_id bigint, daemon boolean DEFAULT false)
RETURNS mvgraph.schedule_data
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    s mvgraph.schedule_data;
BEGIN
    SELECT * INTO s FROM mvgraph.schedule_data d WHERE d.id = schedule_id FOR UPDATE;
    IF NOT FOUND OR NOT (mvgraph.acts_as(s.owner) OR mvgraph.has_level('admin')
                         OR (daemon AND mvgraph.has_level('worker'))) THEN
        RAISE EXCEPTION 'no schedule %', schedule_id USING ERRCODE = 'no_data_found',
              HINT = 'list schedules with mvgraph schedule list';
    END IF;
    RETURN s;
END
$$;

CREATE FUNCTION mvgraph.create_schedule(
    schedule_name text, view_oid oid, schedule_behavior text, schedule_kind text,
    schedule_start timestamptz, schedule_every interval, schedule_every_text text,
    schedule_cron text, schedule_tz text, schedule_lag interval, schedule_overlap text,
    schedule_next timestamptz, schedule_source text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
BEGIN
    PERFORM mvgraph.require_level('operator', 'scheduling a refresh');
    IF NOT mvgraph.may_refresh(view_oid) THEN
        RAISE EXCEPTION 'permission denied: % may not refresh %', mvgraph.actor(),
              coalesce(view_oid::regclass::text, view_oid::text)
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'schedule only views you own (or hold MAINTAIN on)';
    END IF;
    INSERT INTO mvgraph.schedule_data (name, what, view_oid, view_name, behavior, kind, start_at,
                                       every, every_text, cron, tz, target_lag, overlap, next_run,
                                       source, owner, login)
    VALUES (schedule_name, '', view_oid, '', schedule_behavior, schedule_kind, schedule_start,
            schedule_every, schedule_every_text, schedule_cron, schedule_tz, schedule_lag,
            schedule_overlap, schedule_next, schedule_source, mvgraph.actor(), session_user)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

CREATE FUNCTION mvgraph.alter_schedule(
    schedule_id bigint, schedule_behavior text, schedule_kind text,
    schedule_start timestamptz, schedule_every interval, schedule_every_text text,
    schedule_cron text, schedule_tz text, schedule_lag interval, schedule_overlap text,
    schedule_next timestamptz, schedule_source text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.schedule_for_update(schedule_id);
    UPDATE mvgraph.schedule_data
       SET behavior = schedule_behavior, kind = schedule_kind, start_at = schedule_start,
           every = schedule_every, every_text = schedule_every_text, cron = schedule_cron,
           tz = schedule_tz, target_lag = schedule_lag, overlap = schedule_overlap,
           next_run = schedule_next, source = coalesce(schedule_source, source)
     WHERE id = schedule_id;
END
$$;

CREATE FUNCTION mvgraph.drop_schedule(schedule_id bigint) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    gone text;
BEGIN
    PERFORM mvgraph.schedule_for_update(schedule_id);
    DELETE FROM mvgraph.schedule_data WHERE id = schedule_id RETURNING name INTO gone;
    RETURN gone;
END
$$;

-- Schedules (visible to the caller) whose view is gone (dropped without the sql_drop event
-- trigger installed).
CREATE FUNCTION mvgraph.drop_orphan_schedules() RETURNS SETOF text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    DELETE FROM mvgraph.schedule_data s
     WHERE s.id IN (SELECT v.id FROM mvgraph.schedule v)
       AND NOT EXISTS (SELECT FROM pg_class c WHERE c.oid = s.view_oid AND c.relkind = 'm')
    RETURNING s.name;
END
$$;

-- Pause, or resume (which also clears is_broken and the failure count).
CREATE FUNCTION mvgraph.set_schedule_enabled(schedule_id bigint, on_off boolean,
                                             schedule_next timestamptz)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.schedule_for_update(schedule_id);
    UPDATE mvgraph.schedule_data
       SET enabled = on_off,
           is_broken = CASE WHEN on_off THEN false ELSE is_broken END,
           failure_count = CASE WHEN on_off THEN 0 ELSE failure_count END,
           next_run = schedule_next
     WHERE id = schedule_id;
END
$$;

CREATE FUNCTION mvgraph.set_next_run(schedule_id bigint, schedule_next timestamptz)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.schedule_for_update(schedule_id, true);
    UPDATE mvgraph.schedule_data SET next_run = schedule_next WHERE id = schedule_id;
END
$$;

-- Record a slot once (the unique key lets exactly one caller in); true if it was this one.
-- Daemons (workers) and, for a run-now, the schedule's owner.
CREATE FUNCTION mvgraph.claim_slot(schedule_id bigint, at timestamptz, slot_status text,
                                   slot_job bigint, is_manual boolean, why text, by_whom text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    n integer;
BEGIN
    PERFORM mvgraph.schedule_for_update(schedule_id, true);
    IF slot_job IS NOT NULL THEN
        PERFORM mvgraph.job_to_run(slot_job);
    END IF;
    INSERT INTO mvgraph.schedule_slot_data (schedule_id, slot, status, job_id, manual, reason,
                                            claimed_by)
    VALUES (schedule_id, at, slot_status, slot_job, is_manual, why, by_whom)
    ON CONFLICT (schedule_id, slot) DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n > 0;
END
$$;

-- A fired slot's job (submitted in the same transaction as the claim) and the schedule's
-- last start.
CREATE FUNCTION mvgraph.set_slot_job(schedule_id bigint, at timestamptz, slot_job bigint)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.schedule_for_update(schedule_id, true);
    PERFORM mvgraph.job_to_run(slot_job);
    UPDATE mvgraph.schedule_slot_data SET job_id = slot_job
     WHERE schedule_slot_data.schedule_id = set_slot_job.schedule_id AND slot = at;
    UPDATE mvgraph.schedule_data SET last_start = now(), last_job = slot_job
     WHERE id = set_slot_job.schedule_id;
END
$$;

-- A schedule's job, submitted by a daemon: owned by the schedule's owner (and run logged in as
-- the login that created the schedule). Only refreshes: what a schedule does.
CREATE FUNCTION mvgraph.submit_for_schedules(schedule_ids bigint[], job_statement text,
                                             job_options jsonb, job_host text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    owners  name[];
    logins  name[];
    new_id  bigint;
BEGIN
    PERFORM mvgraph.require_level('worker', 'submitting a schedule''s job');
    IF mvgraph.statement_kind(job_statement) <> 'refresh' THEN
        RAISE EXCEPTION 'a schedule submits REFRESH MATERIALIZED VIEW only, not: %',
              left(job_statement, 60) USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(DISTINCT s.owner), array_agg(DISTINCT s.login) INTO owners, logins
      FROM mvgraph.schedule_data s WHERE s.id = ANY (schedule_ids);
    IF cardinality(owners) IS DISTINCT FROM 1 OR cardinality(logins) IS DISTINCT FROM 1 THEN
        RAISE EXCEPTION 'schedules % do not have one owner', schedule_ids
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO mvgraph.job_data (kind, statement, status, background, options, host, owner,
                                  login)
    VALUES ('refresh', job_statement, 'queued', true, job_options, job_host, owners[1],
            logins[1])
    RETURNING id INTO new_id;
    PERFORM pg_notify('mvgraph_jobs', new_id::text);
    RETURN new_id;
END
$$;

-- Slots whose job has ended and whose end is not yet written to the schedule, oldest end
-- first; locked so that each end is counted by one daemon (in the caller's transaction).
CREATE FUNCTION mvgraph.schedule_ends()
RETURNS TABLE (schedule_id bigint, slot timestamptz, job_id bigint, status text, error text,
               finished_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.require_level('worker', 'closing schedule runs');
    RETURN QUERY
    SELECT ss.schedule_id, ss.slot, j.id, j.status, j.error, j.finished_at
      FROM mvgraph.schedule_slot_data ss JOIN mvgraph.job_data j ON j.id = ss.job_id
     WHERE ss.job_id IS NOT NULL AND NOT ss.ended
       AND j.status IN ('done', 'failed', 'cancelled')
     ORDER BY j.finished_at, j.id
     LIMIT 100
       FOR UPDATE OF ss SKIP LOCKED;
END
$$;

-- A run ended: the slot is marked, the schedule gets last end, status and error; a failure
-- counts, a success resets the count; the schedule_max_failures-th failure in a row (default
-- 16) marks it broken. `broke`: this very failure broke it.
CREATE FUNCTION mvgraph.schedule_run_ended(schedule_id bigint, at timestamptz,
                                           ended_at timestamptz, run_status text,
                                           run_error text)
RETURNS TABLE (name text, failure_count integer, is_broken boolean, broke boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    cap integer := coalesce((SELECT value::int FROM mvgraph.setting
                              WHERE key = 'schedule_max_failures'), 16);
BEGIN
    PERFORM mvgraph.require_level('worker', 'closing schedule runs');
    UPDATE mvgraph.schedule_slot_data ss SET ended = true
     WHERE ss.schedule_id = schedule_run_ended.schedule_id AND ss.slot = at;
    RETURN QUERY
    UPDATE mvgraph.schedule_data s
       SET last_end = ended_at, last_status = run_status, last_error = run_error,
           failure_count = CASE run_status WHEN 'failed' THEN s.failure_count + 1
                                           WHEN 'done' THEN 0 ELSE s.failure_count END,
           is_broken = s.is_broken OR (run_status = 'failed' AND s.failure_count + 1 >= cap)
     WHERE s.id = schedule_run_ended.schedule_id
    RETURNING s.name, s.failure_count, s.is_broken,
              run_status = 'failed' AND s.failure_count = cap;
END
$$;

-- Slots kept waiting (overlap queue) whose schedule has no unfinished run any more (locked in
-- the caller's transaction).
CREATE FUNCTION mvgraph.waiting_slots()
RETURNS TABLE (schedule_id bigint, slot timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.require_level('worker', 'submitting waiting slots');
    RETURN QUERY
    SELECT ss.schedule_id, ss.slot
      FROM mvgraph.schedule_slot_data ss
     WHERE ss.status = 'fired' AND ss.job_id IS NULL AND NOT ss.ended AND NOT ss.manual
       AND NOT EXISTS (SELECT FROM mvgraph.schedule_slot_data o
                         JOIN mvgraph.job_data j ON j.id = o.job_id
                        WHERE o.schedule_id = ss.schedule_id
                          AND j.status IN ('queued', 'running', 'suspended'))
     ORDER BY ss.slot
       FOR UPDATE OF ss SKIP LOCKED;
END
$$;

-- A waiting slot that will not run (its schedule is paused, broken or gone).
CREATE FUNCTION mvgraph.drop_waiting_slot(schedule_id bigint, at timestamptz, why text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.require_level('worker', 'dropping a waiting slot');
    UPDATE mvgraph.schedule_slot_data ss SET status = 'skipped', ended = true, reason = why
     WHERE ss.schedule_id = drop_waiting_slot.schedule_id AND ss.slot = at;
END
$$;

-- `mvgraph demo` leaves its schedules paused.
CREATE FUNCTION mvgraph.pause_all_schedules() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.require_level('admin', 'pausing every schedule');
    UPDATE mvgraph.schedule_data SET enabled = false;
END
$$;

-- ---- daemons ----------------------------------------------------------------------------------

CREATE FUNCTION mvgraph.daemon_register(daemon_name text, daemon_host text, daemon_pid integer,
                                        daemon_workers integer, daemon_version text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
BEGIN
    PERFORM mvgraph.require_level('worker', 'registering a daemon');
    INSERT INTO mvgraph.daemon (name, host, pid, workers, version)
    VALUES (daemon_name, daemon_host, daemon_pid, daemon_workers, daemon_version)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

CREATE FUNCTION mvgraph.daemon_heartbeat(daemon_id bigint, daemon_schedules integer)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    found_id bigint;
BEGIN
    PERFORM mvgraph.require_level('worker', 'a daemon heartbeat');
    UPDATE mvgraph.daemon SET heartbeat_at = now(), schedules = daemon_schedules
     WHERE id = daemon_id RETURNING id INTO found_id;
    RETURN found_id;
END
$$;

CREATE FUNCTION mvgraph.daemon_remove(daemon_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.require_level('worker', 'removing a daemon');
    DELETE FROM mvgraph.daemon WHERE id = daemon_id;
END
$$;

-- ---- settings and repairs ---------------------------------------------------------------------

CREATE FUNCTION mvgraph.put_setting(setting_key text, setting_value text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.require_level('admin', 'changing a setting');
    INSERT INTO mvgraph.setting (key, value) VALUES (setting_key, setting_value)
    ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now();
END
$$;

-- 0003's repair of a lost change log, run by whichever reader notices (any level).
ALTER FUNCTION mvgraph.change_log_intact() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- The writers' trigger: its body names everything with its schema; the search path is pinned
-- as well, as for every SECURITY DEFINER function.
ALTER FUNCTION mvgraph.track_write() SET search_path = pg_catalog, pg_temp;

-- ---- privilege levels (pg_background's grant and revoke functions) ----------------------------

-- What each level is granted: (kind, object, privilege). viewer: read status; operator: submit
-- and steer its own jobs, run refreshes, manage its own schedules; worker: what a worker or
-- daemon login needs; admin: all of it, settings and grants.
CREATE FUNCTION mvgraph.level_grants(wanted text)
RETURNS TABLE (kind text, object text, privilege text)
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT g.kind, g.object, g.privilege
      FROM (VALUES
        -- viewer
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
        -- operator
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
        ('operator', 'FUNCTION', 'mvgraph.create_schedule(text, oid, text, text, timestamptz, interval, text, text, text, interval, text, timestamptz, text)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.alter_schedule(bigint, text, text, timestamptz, interval, text, text, text, interval, text, timestamptz, text)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.drop_schedule(bigint)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.drop_orphan_schedules()', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.set_schedule_enabled(bigint, boolean, timestamptz)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.set_next_run(bigint, timestamptz)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.claim_slot(bigint, timestamptz, text, bigint, boolean, text, text)', 'EXECUTE'),
        ('operator', 'FUNCTION', 'mvgraph.set_slot_job(bigint, timestamptz, bigint)', 'EXECUTE'),
        ('operator', 'TABLE', 'mvgraph.mv_state', 'INSERT, UPDATE, DELETE'),
        ('operator', 'TABLE', 'mvgraph.change_log', 'INSERT, UPDATE, DELETE'),
        ('operator', 'TABLE', 'mvgraph.write_log', 'DELETE'),
        ('operator', 'TABLE', 'mvgraph.table_mode', 'INSERT, UPDATE, DELETE'),
        ('operator', 'TABLE', 'mvgraph.wal_flush', 'INSERT, UPDATE, DELETE'),
        -- worker
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
        -- admin
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

CREATE FUNCTION mvgraph.revoke_privileges(role_name name, print_commands boolean DEFAULT false)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    g record;
    cmd text;
BEGIN
    PERFORM mvgraph.require_level('admin', 'revoking mvgraph privileges');
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
        RAISE EXCEPTION 'role "%" does not exist', role_name USING ERRCODE = 'undefined_object';
    END IF;
    FOR g IN SELECT * FROM mvgraph.level_grants('admin') ORDER BY 1, 2 LOOP
        cmd := format('REVOKE %s ON %s %s FROM %I', g.privilege, g.kind, g.object, role_name);
        EXECUTE cmd;
        IF print_commands THEN
            RAISE INFO 'Executed command: %', cmd;
        END IF;
    END LOOP;
    DELETE FROM mvgraph.privilege WHERE role = role_name;
    RETURN true;
END
$$;

CREATE FUNCTION mvgraph.grant_privileges(role_name name, level text,
                                         print_commands boolean DEFAULT false)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    g record;
    cmd text;
BEGIN
    PERFORM mvgraph.require_level('admin', 'granting mvgraph privileges');
    IF level NOT IN ('viewer', 'operator', 'worker', 'admin') THEN
        RAISE EXCEPTION 'no level %', level USING ERRCODE = 'invalid_parameter_value',
              HINT = 'levels: viewer, operator, worker, admin';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
        RAISE EXCEPTION 'role "%" does not exist', role_name USING ERRCODE = 'undefined_object';
    END IF;
    PERFORM mvgraph.revoke_privileges(role_name, false);  -- a new level replaces the old
    FOR g IN SELECT * FROM mvgraph.level_grants(level) ORDER BY 1, 2 LOOP
        cmd := format('GRANT %s ON %s %s TO %I', g.privilege, g.kind, g.object, role_name);
        EXECUTE cmd;
        IF print_commands THEN
            RAISE INFO 'Executed command: %', cmd;
        END IF;
    END LOOP;
    INSERT INTO mvgraph.privilege (role, level, granted_by)
    VALUES (role_name, level, mvgraph.actor());
    RETURN true;
END
$$;

-- ---- nothing is open to PUBLIC, and no role keeps a right on the tables ----------------------

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT c.oid::regclass AS rel, a.grantee
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
                    aclexplode(c.relacl) a
              WHERE n.nspname IN ('mvgraph', 'scheduler') AND a.grantee <> c.relowner LOOP
        EXECUTE format('REVOKE ALL ON %s FROM %s', r.rel,
                       CASE WHEN r.grantee = 0 THEN 'PUBLIC'
                            ELSE quote_ident(pg_get_userbyid(r.grantee)) END);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS fn, p.prokind, a.grantee
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace,
                    aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
              WHERE n.nspname = 'mvgraph' AND a.grantee <> p.proowner LOOP
        EXECUTE format('REVOKE ALL ON %s %s FROM %s',
                       CASE WHEN r.prokind = 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, r.fn,
                       CASE WHEN r.grantee = 0 THEN 'PUBLIC'
                            ELSE quote_ident(pg_get_userbyid(r.grantee)) END);
    END LOOP;
END
$$;
-- The identity helpers run inside the views, with the caller's EXECUTE right.
GRANT EXECUTE ON FUNCTION mvgraph.actor(), mvgraph.has_level(text), mvgraph.sees_all(),
                          mvgraph.my_roles(), mvgraph.acts_as(name) TO PUBLIC;
-- Functions that only compute (no data) stay callable by whoever may use the schema.
GRANT EXECUTE ON FUNCTION mvgraph.job_lock_key(bigint), mvgraph.statement_kind(text),
                          mvgraph.view_inputs(oid), mvgraph.require_level(text, text)
    TO PUBLIC;
-- A table owner's `mvgraph track` creates a trigger calling this (it cannot be called otherwise).
GRANT EXECUTE ON FUNCTION mvgraph.track_write() TO PUBLIC;

-- The sql_drop event trigger (0008's) on the tables themselves: dropping a view drops its
-- schedule and cancels the background CREATE populating it whoever's they are (the views above
-- would show the dropping role only its own).
CREATE OR REPLACE FUNCTION mvgraph.on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j record;
BEGIN
    DELETE FROM mvgraph.schedule_data
     WHERE view_oid IN (SELECT objid FROM pg_event_trigger_dropped_objects()
                         WHERE classid = 'pg_class'::regclass AND objsubid = 0
                           AND object_type = 'materialized view');
    FOR j IN SELECT job.id, job.status, d.object_identity
               FROM pg_event_trigger_dropped_objects() d
               JOIN mvgraph.job_data job ON job.kind = 'create'
                AND job.status IN ('queued', 'suspended', 'running')
                AND job.options ? 'mv' AND (job.options ->> 'mv')::oid = d.objid
              WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0
                AND d.object_type = 'materialized view' LOOP
        IF j.status = 'running' THEN
            UPDATE mvgraph.job_data SET request = 'cancel' WHERE id = j.id;
        ELSE
            UPDATE mvgraph.job_step_data
               SET status = 'cancelled', finished_at = clock_timestamp(),
                   reason = 'the view was dropped'
             WHERE job_id = j.id AND status IN ('pending', 'running');
            UPDATE mvgraph.job_data
               SET status = 'cancelled', request = NULL, lease_until = NULL,
                   finished_at = clock_timestamp(),
                   error = format('cancelled: materialized view %s was dropped', j.object_identity)
             WHERE id = j.id;
        END IF;
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION mvgraph.on_sql_drop() FROM PUBLIC;
