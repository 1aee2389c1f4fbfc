-- A worker's job in fewer round trips (issue 22).
--
-- * mvgraph.claim_jobs_start: the claim (as mvgraph.claim_jobs: the cap, oldest first, a lease,
--   the attempt) returns with each job what the worker read separately before starting it: the
--   stored settings (how to run), the catalog's fingerprint (whether its cached graph still
--   holds) and the job's step rows (a requeued or resumed job goes on from its first unfinished
--   step). One round trip instead of four.
-- * A step's running mark is written in the step's own transaction (no commit of its own): it
--   is seen once the step ends. While it runs, its session's application_name says so
--   (``mvgraph job N step S``, set for the transaction only): mvgraph.job_step shows such a
--   pending step running, with that backend, and mvgraph.cancel_job interrupts it by that name
--   (and, as before, the backends recorded by steps that commit their mark: rebuilds,
--   background statements, foreground batches).

-- ---- the catalog's fingerprint, server-side ------------------------------------------------

-- The same digest as the catalog_fingerprint query (mvgraph/db/queries.sql; a test compares
-- them): relations, rewrite rules, schema names (not temporary ones), inheritance links, user
-- functions' volatility.
CREATE FUNCTION mvgraph.catalog_fingerprint() RETURNS text
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
SELECT (SELECT count(*) || ':' || coalesce(bit_xor(
               hashtextextended(c.relname, c.oid::bigint << 32 | c.relnamespace::bigint)
               # (c.relowner::bigint << 40) # ascii(c.relkind::text)::bigint), 0)
          FROM pg_class c WHERE c.relpersistence <> 't')
       || '/' || (SELECT count(*) || ':' || coalesce(bit_xor(
                  r.oid::bigint << 32 | r.xmin::text::bigint), 0)
                    FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
                   WHERE c.relpersistence <> 't')
       || '/' || (SELECT count(*) || ':' || coalesce(bit_xor(
                  hashtextextended(n.nspname, n.oid::bigint)), 0) FROM pg_namespace n
                   WHERE n.nspname !~ '^pg_(toast_)?temp_[0-9]+$')
       || '/' || (SELECT count(*) || ':' || coalesce(bit_xor(
                  i.inhrelid::bigint << 32 | i.inhparent::bigint), 0) FROM pg_inherits i)
       || '/' || (SELECT count(*) || ':' || coalesce(bit_xor(
                  hashtextextended(p.proname || p.provolatile::text, p.oid::bigint)), 0)
                    FROM pg_proc p WHERE p.oid >= 16384)
$$;

-- ---- the claim, with what starting a job needs ----------------------------------------------

-- Up to `wanted` jobs claimed as mvgraph.claim_jobs does (workers only), each with the stored
-- settings (key -> value), the catalog fingerprint (read after the claim, before the worker
-- reads any graph: DDL committed meanwhile makes the next job read it again), its step rows
-- ([seq, name, status, reason, error], in order; empty for a job never planned) and mvgraph's
-- event triggers installed and enabled (as the event_triggers query reads them).
CREATE FUNCTION mvgraph.claim_jobs_start(worker_name text, lease_s double precision,
                                         wanted integer)
RETURNS TABLE (id bigint, kind text, statement text, options jsonb, owner name, attempt integer,
               login name, settings jsonb, fingerprint text, steps jsonb, event_triggers text[])
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH claimed AS MATERIALIZED (
        SELECT c.id, c.kind, c.statement, c.options, c.owner, c.attempt, c.login
          FROM mvgraph.claim_jobs(worker_name, lease_s, wanted) c)
    SELECT c.id, c.kind, c.statement, c.options, c.owner, c.attempt, c.login,
           s.settings, mvgraph.catalog_fingerprint(),
           coalesce((SELECT jsonb_agg(jsonb_build_array(st.seq, st.name, st.status, st.reason,
                                                        st.error) ORDER BY st.seq)
                       FROM mvgraph.job_step_data st WHERE st.job_id = c.id), '[]'::jsonb),
           ARRAY(SELECT e.evtname::text FROM pg_event_trigger e
                  WHERE e.evtname IN ('mvgraph_ddl_end', 'mvgraph_ddl_start', 'mvgraph_sql_drop')
                    AND e.evtenabled <> 'D' ORDER BY e.evtname)
      FROM claimed c
     CROSS JOIN (SELECT coalesce(jsonb_object_agg(t.key, t.value), '{}'::jsonb) AS settings
                   FROM mvgraph.setting t) s
     ORDER BY c.id;
END
$$;

-- ---- a step's running mark, inside its transaction -----------------------------------------

-- The session that runs a step now: named for it by its transaction (mvgraph.step_started),
-- logged in as the job's login; its transaction's start when the caller may see it.
CREATE FUNCTION mvgraph.step_session(job bigint, step_seq integer, job_login name,
                                     OUT pid integer, OUT since timestamptz)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT a.pid, a.xact_start FROM pg_stat_activity a
     WHERE a.application_name = 'mvgraph job ' || job || ' step ' || step_seq
       AND a.usename = job_login
     ORDER BY a.pid LIMIT 1
$$;

-- A step marks itself running in its own transaction (mvgraph.step_running, then the refresh,
-- then COMMIT), with its session's application_name set to 'mvgraph job N step S' for that
-- transaction. Until it commits others see the step pending: the view shows it running, with
-- the backend (and, to whom may see it, the transaction's start) of the session so named. One
-- table in FROM, as before: writing through the view is refused for want of privileges.
-- pg_stat_activity is read once per query (a hashed subplan), and again only for steps named.
CREATE OR REPLACE VIEW mvgraph.job_step WITH (security_barrier) AS
SELECT s.job_id, s.seq, s.name, s.mv, s.planned,
       CASE WHEN s.status = 'pending'
                 AND 'mvgraph job ' || s.job_id || ' step ' || s.seq IN (
                     SELECT p.application_name FROM pg_catalog.pg_stat_activity p
                      WHERE p.application_name LIKE 'mvgraph job % step %')
             AND (mvgraph.step_session(s.job_id, s.seq,
                     (SELECT j.login FROM mvgraph.job_data j WHERE j.id = s.job_id))).pid
                 IS NOT NULL
            THEN 'running' ELSE s.status END AS status,
       s.reason, s.concurrent,
       coalesce(s.started_at,
            CASE WHEN s.status = 'pending'
                 AND 'mvgraph job ' || s.job_id || ' step ' || s.seq IN (
                     SELECT p.application_name FROM pg_catalog.pg_stat_activity p
                      WHERE p.application_name LIKE 'mvgraph job % step %')
                 THEN (mvgraph.step_session(s.job_id, s.seq,
                     (SELECT j.login FROM mvgraph.job_data j WHERE j.id = s.job_id))).since
            END) AS started_at,
       s.finished_at, s.duration_s,
       coalesce(s.backend_pid,
            CASE WHEN s.status = 'pending'
                 AND 'mvgraph job ' || s.job_id || ' step ' || s.seq IN (
                     SELECT p.application_name FROM pg_catalog.pg_stat_activity p
                      WHERE p.application_name LIKE 'mvgraph job % step %')
                 THEN (mvgraph.step_session(s.job_id, s.seq,
                     (SELECT j.login FROM mvgraph.job_data j WHERE j.id = s.job_id))).pid
            END) AS backend_pid,
       s.error, s.rows_affected
  FROM mvgraph.job_step_data s
 WHERE (SELECT mvgraph.sees_all()) OR s.job_id IN (SELECT j.id FROM mvgraph.job j);

-- The cancel's bookkeeping (0018), interrupting the backends that run a step of the job now:
-- those named for one of its steps (above), and those recorded by a step that committed its
-- running mark (rebuilds, background statements, a foreground batch).
CREATE OR REPLACE FUNCTION mvgraph.cancel_job_request(job_id bigint) RETURNS text
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
    FOR s IN SELECT DISTINCT a.pid FROM pg_stat_activity a
              WHERE a.usename = j.login
                AND (starts_with(a.application_name, 'mvgraph job ' || j.id || ' step ')
                     OR a.pid IN (SELECT st.backend_pid FROM mvgraph.job_step_data st
                                   WHERE st.job_id = j.id AND st.status = 'running')) LOOP
        BEGIN
            PERFORM pg_cancel_backend(s.pid);
        EXCEPTION WHEN insufficient_privilege THEN
            NULL;  -- the runner sees the request at its next step
        END;
    END LOOP;
    RETURN 'cancelling';
END
$$;

-- ---- the levels -----------------------------------------------------------------------------

REVOKE ALL ON FUNCTION mvgraph.catalog_fingerprint(),
    mvgraph.claim_jobs_start(text, double precision, integer) FROM PUBLIC;

INSERT INTO mvgraph.level_grant (level, kind, object, privilege) VALUES
    ('worker', 'FUNCTION', 'mvgraph.claim_jobs_start(text, double precision, integer)', 'EXECUTE');

-- Roles holding a level get its new rights.
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
