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
-- A step the plan skips (`skip`) stays skipped, without a transaction (the client records it
-- with the run's end, as it does for such steps), unless one of `after` changed. A step whose
-- verdict needs the client stops the batch before it runs ('stopped'): a skipped step after an
-- upstream step that changed, or a step to refresh with a NULL reason (refreshed only once an
-- upstream step of this batch has changed) none of whose `after` (upstream steps of this batch,
-- in the plan's order) changed. A step raced by another refresh (refresh_step returned 'raced',
-- having changed nothing) stops it too. Any error ends the CALL: the steps before it stay committed, the failing step's
-- transaction is rolled back, and the client records the failure and goes on with the rest.
--
-- steps: [{seq, oid, name, key, concurrently, reason, after, inputs, stats, check, seen, skip}]
-- outcome: {"done": [{seq, outcome ('done' or 'skipped'), took, changed, reason}],
--           "stopped": seq or null,
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
    nxt      integer;
BEGIN
    -- the first step to refresh is marked running (the next ones with the step before them)
    SELECT (x ->> 'seq')::integer INTO nxt FROM pg_catalog.jsonb_array_elements(steps) x
     WHERE NOT coalesce((x ->> 'skip')::boolean, false) LIMIT 1;
    IF nxt IS NOT NULL THEN
        UPDATE mvgraph.job_step
           SET status = 'running', started_at = pg_catalog.clock_timestamp(),
               backend_pid = pg_catalog.pg_backend_pid()
         WHERE job_id = job AND seq = nxt;
        COMMIT;
    END IF;
    WHILE i < n LOOP
        s := steps -> i;
        IF coalesce((s ->> 'skip')::boolean, false) THEN
            IF EXISTS (SELECT FROM pg_catalog.jsonb_array_elements_text(s -> 'after') a(name)
                        WHERE a.name = ANY (changed)) THEN
                why := 'undecided';
                EXIT;
            END IF;
            item := pg_catalog.jsonb_build_object('event', 'finished', 'seq', s -> 'seq',
                                                  'outcome', 'skipped');
            done := done || item;
            RAISE NOTICE USING MESSAGE = 'mvgraph step', DETAIL = item::text;
            i := i + 1;
            CONTINUE;
        END IF;
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
        nxt := NULL;  -- the next step to refresh: its running mark commits with this step
        SELECT (x.v ->> 'seq')::integer INTO nxt
          FROM pg_catalog.jsonb_array_elements(steps) WITH ORDINALITY x(v, k)
         WHERE x.k > i + 1 AND NOT coalesce((x.v ->> 'skip')::boolean, false)
         ORDER BY x.k LIMIT 1;
        IF nxt IS NOT NULL THEN
            UPDATE mvgraph.job_step
               SET status = 'running', started_at = pg_catalog.clock_timestamp(),
                   backend_pid = pg_catalog.pg_backend_pid()
             WHERE job_id = job AND seq = nxt;
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
