-- Jobs: a queue with owners, leases and requests (cancel / suspend), the SQL API
-- (mvgraph.submit, mvgraph.jobs, mvgraph.cancel_job, mvgraph.job_result), and refresh_step
-- running a job's REFRESH with its owner's rights. The CHECKs below are mirrored one to one by
-- the enums of mvgraph/model/status.py.

ALTER TABLE mvgraph.job DROP CONSTRAINT job_status_check;
UPDATE mvgraph.job SET status = 'queued' WHERE status = 'pending';
-- Runs left 'running' by earlier versions had no owner lock: their processes are gone or will
-- overwrite this when they finish.
UPDATE mvgraph.job_step SET status = 'cancelled', error = 'process lost'
 WHERE status IN ('pending', 'running')
   AND job_id IN (SELECT id FROM mvgraph.job WHERE status = 'running');
UPDATE mvgraph.job SET status = 'failed', finished_at = now(),
       error = 'process lost (found running when the jobs schema was installed)'
 WHERE status = 'running';
ALTER TABLE mvgraph.job
    ALTER COLUMN status SET DEFAULT 'queued',
    ADD CONSTRAINT job_status_check
        CHECK (status IN ('queued', 'running', 'suspended', 'done', 'failed', 'cancelled')),
    ADD CONSTRAINT job_kind_check CHECK (kind IN ('refresh', 'sql', 'create')),
    ADD COLUMN background  boolean NOT NULL DEFAULT false,  -- run by a worker (lease), not
                                                           -- by the submitting process (lock)
    ADD COLUMN request     text CONSTRAINT job_request_check CHECK (request IN ('cancel', 'suspend')),
    ADD COLUMN worker      text,         -- the worker holding the lease
    ADD COLUMN attempt     integer NOT NULL DEFAULT 0,  -- claims so far; a lease is per attempt
    ADD COLUMN lease_until timestamptz,  -- a worker's job is lost once this passes
    ADD COLUMN result      jsonb;        -- what the job produced (later: statement results)
ALTER TABLE mvgraph.job_step ADD COLUMN rows_affected bigint;
CREATE INDEX job_queue ON mvgraph.job (id) WHERE status IN ('queued', 'running');

-- The owner is whoever inserts the row: nobody can queue work under another role's name.
CREATE FUNCTION mvgraph.job_owner() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.owner := current_user;
    RETURN NEW;
END
$$;
CREATE TRIGGER job_owner BEFORE INSERT ON mvgraph.job
    FOR EACH ROW EXECUTE FUNCTION mvgraph.job_owner();

-- A foreground run holds this session-level advisory lock on its job while it runs; PostgreSQL
-- releases it when the run's connection ends, however the process died.
CREATE FUNCTION mvgraph.job_lock_key(job_id bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT (27234::bigint << 32) | (job_id & 4294967295) $$;

-- Close or requeue running jobs whose owner is gone: a foreground run whose lock is free
-- (failed: process lost), a worker's job whose lease expired (queued again, from its first
-- unfinished step; cancelled or suspended if that had been asked). Returns how many.
CREATE FUNCTION mvgraph.reap_jobs() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    j record;
    n integer := 0;
BEGIN
    FOR j IN SELECT id, background, request FROM mvgraph.job
              WHERE status = 'running'
                AND CASE WHEN background THEN coalesce(lease_until < now(), true)
                         ELSE pid IS DISTINCT FROM pg_catalog.pg_backend_pid()
                              AND pg_catalog.pg_try_advisory_xact_lock(mvgraph.job_lock_key(id))
                    END
              ORDER BY id
                FOR UPDATE SKIP LOCKED LOOP
        IF j.background AND j.request IS DISTINCT FROM 'cancel' THEN
            UPDATE mvgraph.job_step SET status = 'pending', started_at = NULL, backend_pid = NULL
             WHERE job_id = j.id AND status = 'running';
            UPDATE mvgraph.job
               SET status = CASE WHEN j.request = 'suspend' THEN 'suspended' ELSE 'queued' END,
                   worker = NULL, lease_until = NULL, pid = NULL, request = NULL,
                   error = 'worker lost; requeued from the first unfinished step'
             WHERE id = j.id;
        ELSE
            UPDATE mvgraph.job_step
               SET status = 'cancelled', finished_at = pg_catalog.clock_timestamp(),
                   error = 'process lost'
             WHERE job_id = j.id AND status IN ('pending', 'running');
            UPDATE mvgraph.job
               SET status = CASE WHEN j.request = 'cancel' THEN 'cancelled' ELSE 'failed' END,
                   finished_at = pg_catalog.clock_timestamp(), lease_until = NULL,
                   error = 'process lost: the session running this job ended before it finished'
             WHERE id = j.id;
        END IF;
        n := n + 1;
    END LOOP;
    RETURN n;
END
$$;

-- Take the oldest queued job for a worker, unless max_concurrent_jobs worker jobs already run.
-- Claims are serialised by a transaction-level advisory lock, so the count is exact across
-- every worker on every machine.
CREATE FUNCTION mvgraph.claim_job(worker_name text, lease_s double precision)
RETURNS SETOF mvgraph.job
LANGUAGE plpgsql AS $$
DECLARE
    cap  integer;
    busy integer;
    j    mvgraph.job;
BEGIN
    PERFORM mvgraph.reap_jobs();
    PERFORM pg_catalog.pg_advisory_xact_lock(mvgraph.job_lock_key(0));
    cap := coalesce((SELECT value::integer FROM mvgraph.setting WHERE key = 'max_concurrent_jobs'), 4);
    SELECT count(*) INTO busy FROM mvgraph.job WHERE status = 'running' AND background;
    IF busy >= cap THEN
        RETURN;
    END IF;
    SELECT * INTO j FROM mvgraph.job WHERE status = 'queued' ORDER BY id
       FOR UPDATE SKIP LOCKED LIMIT 1;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE mvgraph.job
       SET status = 'running', background = true, worker = worker_name, attempt = attempt + 1,
           lease_until = now() + pg_catalog.make_interval(secs => lease_s),
           started_at = coalesce(started_at, now()), pid = pg_catalog.pg_backend_pid(),
           request = NULL, error = NULL
     WHERE id = j.id
    RETURNING * INTO j;
    RETURN NEXT j;
END
$$;

-- A worker renews the lease of a job it runs; returns the request waiting for it ('' for
-- none), or 'lost' when the job is no longer this attempt's.
CREATE FUNCTION mvgraph.job_heartbeat(job_id bigint, job_attempt integer, lease_s double precision)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    req text;
BEGIN
    UPDATE mvgraph.job j SET lease_until = now() + pg_catalog.make_interval(secs => lease_s)
     WHERE j.id = job_id AND j.attempt = job_attempt AND j.status = 'running'
    RETURNING coalesce(j.request, '') INTO req;
    RETURN coalesce(req, 'lost');
END
$$;

-- The job row, locked for an update, or the one error every job function gives for an id
-- that does not exist.
CREATE FUNCTION mvgraph.job_for_update(job_id bigint) RETURNS mvgraph.job
LANGUAGE plpgsql AS $$
DECLARE
    j mvgraph.job;
BEGIN
    SELECT * INTO j FROM mvgraph.job WHERE id = job_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no job %', job_id USING ERRCODE = 'no_data_found',
              HINT = 'list jobs with mvgraph jobs or SELECT * FROM mvgraph.jobs';
    END IF;
    RETURN j;
END
$$;

-- Cancel a job from any session: a queued or suspended job is cancelled at once; a running one
-- is asked to stop and its running statements are cancelled (pg_cancel_backend needs the same
-- role or pg_signal_backend; without it the request takes effect at the next step). Returns
-- the job's status, or 'cancelling'.
CREATE FUNCTION mvgraph.cancel_job(job_id bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    j mvgraph.job;
    s record;
BEGIN
    j := mvgraph.job_for_update(job_id);
    IF j.status IN ('queued', 'suspended') THEN
        UPDATE mvgraph.job_step st
           SET status = 'cancelled', reason = 'job cancelled before this step',
               finished_at = pg_catalog.clock_timestamp()
         WHERE st.job_id = j.id AND st.status IN ('pending', 'running');
        UPDATE mvgraph.job SET status = 'cancelled', request = NULL, lease_until = NULL,
               finished_at = pg_catalog.clock_timestamp() WHERE id = j.id;
        RETURN 'cancelled';
    ELSIF j.status <> 'running' THEN
        RETURN j.status;
    END IF;
    UPDATE mvgraph.job SET request = 'cancel' WHERE id = j.id;
    FOR s IN SELECT DISTINCT backend_pid FROM mvgraph.job_step st
              WHERE st.job_id = j.id AND st.status = 'running' AND backend_pid IS NOT NULL LOOP
        BEGIN
            PERFORM pg_catalog.pg_cancel_backend(s.backend_pid);
        EXCEPTION WHEN insufficient_privilege THEN
            NULL;  -- the runner sees the request at its next step
        END;
    END LOOP;
    RETURN 'cancelling';
END
$$;

-- Suspend: a running job stops after its running steps ('suspending'); a queued one is set
-- aside at once.
CREATE FUNCTION mvgraph.suspend_job(job_id bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    st text := (mvgraph.job_for_update(job_id)).status;
BEGIN
    IF st = 'queued' THEN
        UPDATE mvgraph.job SET status = 'suspended' WHERE id = job_id;
        RETURN 'suspended';
    ELSIF st = 'running' THEN
        UPDATE mvgraph.job SET request = 'suspend' WHERE id = job_id AND request IS NULL;
        RETURN 'suspending';
    END IF;
    RETURN st;
END
$$;

-- Resume a suspended job: queued again, a worker continues from its first unfinished step.
CREATE FUNCTION mvgraph.resume_job(job_id bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    st text := (mvgraph.job_for_update(job_id)).status;
BEGIN
    IF st = 'suspended' THEN
        UPDATE mvgraph.job SET status = 'queued', background = true, request = NULL
         WHERE id = job_id;
        PERFORM pg_catalog.pg_notify('mvgraph_jobs', job_id::text);
        RETURN 'queued';
    ELSIF st = 'running' THEN  -- a suspend not yet acted upon is withdrawn
        UPDATE mvgraph.job SET request = NULL WHERE id = job_id AND request = 'suspend';
    END IF;
    RETURN st;
END
$$;

-- Queue a statement as a background job (for now: REFRESH MATERIALIZED VIEW name [behaviour]).
-- The worker parses and plans it when it claims it; until then the job has no steps. Names
-- resolve through the submitter's search_path, recorded here.
CREATE FUNCTION mvgraph.submit(statement text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    IF statement !~* '^\s*refresh\s+materialized\s+view\s' THEN
        RAISE EXCEPTION 'mvgraph.submit accepts REFRESH MATERIALIZED VIEW statements for now: %',
              left(statement, 60) USING ERRCODE = 'feature_not_supported';
    END IF;
    INSERT INTO mvgraph.job (kind, statement, status, background, options)
    VALUES ('refresh', statement, 'queued', true,
            pg_catalog.jsonb_build_object('search_path',
                                          pg_catalog.current_schemas(false)::text[]));
    new_id := pg_catalog.currval('mvgraph.job_id_seq'::regclass);  -- no SELECT right needed
    PERFORM pg_catalog.pg_notify('mvgraph_jobs', new_id::text);
    RETURN new_id;
END
$$;

CREATE VIEW mvgraph.jobs AS
SELECT j.id, j.kind, j.statement, j.status, j.request,
       coalesce(s.done, 0) AS done_steps, coalesce(s.total, 0) AS total_steps,
       j.submitted_at, j.started_at, j.finished_at, j.owner, j.worker, j.error
  FROM mvgraph.job j
  LEFT JOIN LATERAL (
       SELECT count(*) FILTER (WHERE st.status NOT IN ('pending', 'running')) AS done,
              count(*) AS total
         FROM mvgraph.job_step st WHERE st.job_id = j.id) s ON true;

-- A job's outcome as json: status, error, steps counted by status, and its result.
CREATE FUNCTION mvgraph.job_result(job_id bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    out jsonb;
BEGIN
    SELECT pg_catalog.jsonb_build_object(
               'id', j.id, 'statement', j.statement, 'status', j.status, 'error', j.error,
               'submitted_at', j.submitted_at, 'started_at', j.started_at,
               'finished_at', j.finished_at,
               'steps', coalesce((SELECT pg_catalog.jsonb_object_agg(c.status, c.n)
                                    FROM (SELECT st.status, count(*) AS n
                                            FROM mvgraph.job_step st WHERE st.job_id = j.id
                                           GROUP BY st.status) c), '{}'::jsonb),
               'result', j.result)
      INTO out
      FROM mvgraph.job j WHERE j.id = job_id;
    IF out IS NULL THEN
        RAISE EXCEPTION 'no job %', job_id USING ERRCODE = 'no_data_found',
              HINT = 'list jobs with mvgraph jobs or SELECT * FROM mvgraph.jobs';
    END IF;
    RETURN out;
END
$$;

-- refresh_step learns two things: the job attempt it belongs to (a step of a job that was
-- cancelled, suspended or taken over by another worker does not start: SQLSTATE MVJ01), and
-- the role whose rights its REFRESH runs with (the job's owner; the bookkeeping around it runs
-- as the worker). Its outcome is a step status ('done') or 'raced'.
DROP FUNCTION mvgraph.refresh_step(oid, text, bigint, boolean, bigint, integer, text, oid[],
                                   oid[], bigint[], bigint[], boolean, timestamptz);
CREATE FUNCTION mvgraph.refresh_step(
    view_oid oid, view_name text, lock_key bigint, use_concurrently boolean,
    job bigint, step_seq integer, step_reason text,
    input_oids oid[], stats_oids oid[], stats_counters bigint[], stats_filenodes bigint[],
    check_seen boolean, seen timestamptz, job_attempt integer, run_as name)
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
    req     text;
BEGIN
    IF job IS NOT NULL THEN
        SELECT CASE WHEN j.request IS NOT NULL THEN j.request
                    WHEN j.status <> 'running' THEN j.status
                    WHEN job_attempt IS NOT NULL AND j.attempt <> job_attempt THEN 'lost' END
          INTO req FROM mvgraph.job j WHERE j.id = job;
        IF req IS NOT NULL THEN
            RAISE EXCEPTION 'job %: % requested; % not started', job, req, view_name
                  USING ERRCODE = 'MVJ01';
        END IF;
    END IF;
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
    IF run_as IS NOT NULL THEN  -- the job owner's rights for the REFRESH itself
        PERFORM pg_catalog.set_config('role', run_as, true);
    END IF;
    started := pg_catalog.clock_timestamp();
    EXECUTE pg_catalog.format('REFRESH MATERIALIZED VIEW %s %s',
                              CASE WHEN use_concurrently THEN 'CONCURRENTLY' ELSE '' END,
                              view_oid::regclass);
    took := extract(epoch FROM pg_catalog.clock_timestamp() - started);
    IF run_as IS NOT NULL THEN
        PERFORM pg_catalog.set_config('role', 'none', true);
    END IF;
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
    RETURN QUERY SELECT 'done'::text, took, changed, step_reason;
END
$$;

-- Nothing here is open to PUBLIC: grant it explicitly (a later version adds grant commands).
REVOKE ALL ON mvgraph.job, mvgraph.job_step, mvgraph.jobs FROM PUBLIC;
REVOKE ALL ON FUNCTION mvgraph.submit(text), mvgraph.cancel_job(bigint),
              mvgraph.suspend_job(bigint), mvgraph.resume_job(bigint),
              mvgraph.job_result(bigint), mvgraph.claim_job(text, double precision),
              mvgraph.job_heartbeat(bigint, integer, double precision), mvgraph.reap_jobs(),
              mvgraph.job_for_update(bigint)
    FROM PUBLIC;

-- Finished jobs are kept 7 days unless someone chose another value; at most 4 worker jobs run
-- at once.
UPDATE mvgraph.setting SET value = '7' WHERE key = 'retention_days' AND value = '30';
INSERT INTO mvgraph.setting (key, value) VALUES ('max_concurrent_jobs', '4')
ON CONFLICT (key) DO NOTHING;
