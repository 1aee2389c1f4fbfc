-- A batch of refresh steps in one CALL: the steps of one connection run one after the other on
-- the server, each in its own transaction (COMMIT after each), so that a run of 300 trivial
-- views costs a handful of round trips instead of two per view.
--
-- Each step is what the executor's one-step transaction does (see executor.py and
-- 0003_refresh_step.sql): LOCK mv_state (compaction kept away), mvgraph.refresh_step(...), and
-- the job_step row. The "running" mark of a step is committed with the previous step's
-- transaction (the first one's by a transaction of its own), so that others see which step runs
-- and whom to cancel, without a commit of its own per step. refresh_step still checks the job's
-- request (cancel, suspend) and attempt before every step: a request stops the batch between
-- steps (SQLSTATE MVJ01), and pg_cancel_backend stops the running step.
--
-- Progress goes to the client as one NOTICE per step start and per step end (message
-- 'mvgraph step', detail a JSON object), sent as it happens; the client sets client_min_messages
-- to notice for the run. The same results come back in `outcome` when the call returns.
--
-- A step whose verdict needs the client stops the batch before it runs ('stopped'): its reason
-- is NULL and none of `after` (upstream steps of this batch, in the plan's order) changed. A
-- step raced by another refresh (refresh_step returned 'raced', having changed nothing) stops it
-- too. Any error ends the CALL: the steps before it stay committed, the failing step's
-- transaction is rolled back, and the client records the failure and goes on with the rest.
--
-- steps: [{seq, oid, name, key, concurrently, reason, after, inputs, stats, check, seen}]
-- outcome: {"done": [{seq, outcome, took, changed, reason}], "stopped": seq or null,
--           "why": 'undecided' | 'raced' | null}
CREATE PROCEDURE mvgraph.refresh_batch(job bigint, job_attempt integer, run_as name,
                                       steps jsonb, INOUT outcome jsonb DEFAULT NULL)
LANGUAGE plpgsql AS $$
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
BEGIN
    IF n > 0 THEN
        UPDATE mvgraph.job_step
           SET status = 'running', started_at = pg_catalog.clock_timestamp(),
               backend_pid = pg_catalog.pg_backend_pid()
         WHERE job_id = job AND seq = (steps -> 0 ->> 'seq')::integer;
        COMMIT;
    END IF;
    WHILE i < n LOOP
        s := steps -> i;
        reason := s ->> 'reason';
        IF reason IS NULL THEN  -- refreshed only after an upstream step of this batch changed
            SELECT a.name INTO reason
              FROM pg_catalog.jsonb_array_elements_text(s -> 'after') WITH ORDINALITY a(name, k)
             WHERE a.name = ANY (changed) ORDER BY a.k LIMIT 1;
            IF reason IS NULL THEN
                why := 'undecided';
                EXIT;
            END IF;
            reason := pg_catalog.format('input %s was refreshed earlier in this run', reason);
        END IF;
        RAISE NOTICE USING MESSAGE = 'mvgraph step',
              DETAIL = pg_catalog.jsonb_build_object('event', 'started', 'seq', s -> 'seq')::text;
        LOCK TABLE mvgraph.mv_state IN ROW EXCLUSIVE MODE;
        SELECT * INTO r
          FROM mvgraph.refresh_step(
                   (s ->> 'oid')::oid, s ->> 'name', (s ->> 'key')::bigint,
                   (s ->> 'concurrently')::boolean, job, (s ->> 'seq')::integer, reason,
                   ARRAY(SELECT pg_catalog.jsonb_array_elements_text(s -> 'inputs'))::oid[],
                   ARRAY(SELECT pg_catalog.jsonb_array_elements_text(s -> 'stats'))::oid[],
                   NULL, NULL, (s ->> 'check')::boolean, (s ->> 'seen')::timestamptz,
                   job_attempt, run_as);
        IF r.outcome = 'raced' THEN  -- nothing changed: the client decides again
            COMMIT;
            why := 'raced';
            EXIT;
        END IF;
        IF r.content_changed THEN
            changed := changed || (s ->> 'name');
        END IF;
        IF i + 1 < n THEN  -- the next step's running mark commits with this step
            UPDATE mvgraph.job_step
               SET status = 'running', started_at = pg_catalog.clock_timestamp(),
                   backend_pid = pg_catalog.pg_backend_pid()
             WHERE job_id = job AND seq = (steps -> (i + 1) ->> 'seq')::integer;
        END IF;
        COMMIT;
        item := pg_catalog.jsonb_build_object(
            'event', 'finished', 'seq', s -> 'seq', 'outcome', r.outcome, 'took', r.duration_s,
            'changed', r.content_changed, 'reason', r.recorded_reason);
        done := done || item;
        RAISE NOTICE USING MESSAGE = 'mvgraph step', DETAIL = item::text;
        i := i + 1;
    END LOOP;
    outcome := pg_catalog.jsonb_build_object(
        'done', done, 'stopped', CASE WHEN i < n THEN steps -> i -> 'seq' END, 'why', why);
END
$$;
