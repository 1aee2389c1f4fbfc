-- Hot firing (issue 22): a daemon fires every slot due at one instant with ONE statement,
-- mvgraph.fire_slots, instead of about ten round trips per slot (busy check, claim, submit, link,
-- next run, submitted time), set-based: a few statements for the whole batch, whatever its size.
-- The schedules are locked in id order (so that daemons firing the same slots never deadlock);
-- then per slot:
--
-- * the overlap rule: a run of the schedule still unfinished makes the slot `skipped`; with
--   overlap = queue one slot waits (`fired` without a job; submitted when the run ends);
-- * the claim: the unique (schedule_id, slot) key lets exactly one daemon in;
-- * the job: the schedule's REFRESH, owned by the schedule's owner and run logged in as the login
--   that created it (as mvgraph.submit_for_schedules does), linked to the slot; the schedule gets
--   its last start, last job and next run.
--
-- Also: mvgraph.close_schedule_ends writes the runs that ended to their schedules in one
-- statement (it was a round trip per run, with the schedules locked meanwhile); the
-- mvgraph_schedules NOTIFY is not sent for the daemons' own bookkeeping of a firing or a run end
-- (next_run, last_start, last_job, last_end, ...): each made every daemon read the schedule
-- again, a hundred times a second at a hundred firings a second.

CREATE FUNCTION mvgraph.fire_slots(schedule_ids bigint[], slots timestamptz[], whys text[],
                                   next_runs timestamptz[], by_whom text, job_options jsonb,
                                   job_host text)
RETURNS TABLE (schedule_id bigint, slot timestamptz, outcome text, job_id bigint, reason text,
               submitted_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    f_ids      bigint[];
    f_slots    timestamptz[];
    f_outcomes text[];
    f_jobs     bigint[];
    f_reasons  text[];
    f_next     timestamptz[];
    job_seq    text := pg_get_serial_sequence('mvgraph.job_data', 'id');
BEGIN
    PERFORM mvgraph.require_level('worker', 'firing schedules');
    IF cardinality(schedule_ids) <> (SELECT count(DISTINCT i) FROM unnest(schedule_ids) i) THEN
        RAISE EXCEPTION 'mvgraph.fire_slots: one slot per schedule and call'
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- the schedules, locked in id order: every claimer of their slots waits here (claim_slot,
    -- fire_slots lock them; any other insert of a slot row waits on its foreign key), so the
    -- checks below are the truth until this transaction ends
    PERFORM FROM mvgraph.schedule_data d WHERE d.id = ANY (schedule_ids) ORDER BY d.id
        FOR UPDATE;
    -- per slot: the outcome, its reason, and the new job's id when it fires
    WITH f AS (
        SELECT u.id, u.at, u.why, u.nxt, s.id AS found, s.overlap,
               mvgraph.statement_kind(s.what) = 'refresh' AND s.owner IS NOT NULL AS ok,
               EXISTS (SELECT FROM mvgraph.schedule_slot_data ss
                        WHERE ss.schedule_id = u.id AND ss.slot = u.at) AS taken,
               EXISTS (SELECT FROM mvgraph.schedule_slot_data ss
                         JOIN mvgraph.job_data j ON j.id = ss.job_id
                        WHERE ss.schedule_id = u.id
                          AND j.status IN ('queued', 'running', 'suspended')) AS busy,
               EXISTS (SELECT FROM mvgraph.schedule_slot_data ss
                        WHERE ss.schedule_id = u.id AND ss.status = 'fired'
                          AND ss.job_id IS NULL AND NOT ss.ended AND NOT ss.manual) AS waiting,
               s.what
          FROM unnest(schedule_ids, slots, whys, next_runs) AS u (id, at, why, nxt)
          LEFT JOIN mvgraph.schedule_data s ON s.id = u.id
    ), o AS (
        SELECT f.*,
               CASE WHEN f.found IS NULL THEN 'gone'
                    WHEN NOT f.ok THEN 'refused'
                    WHEN f.taken THEN 'taken'
                    WHEN f.busy AND f.overlap = 'queue' AND NOT f.waiting THEN 'waits'
                    WHEN f.busy THEN 'skipped'
                    ELSE 'fired' END AS outcome
          FROM f
    )
    SELECT array_agg(o.id ORDER BY o.id), array_agg(o.at ORDER BY o.id),
           array_agg(o.outcome ORDER BY o.id),
           array_agg(CASE WHEN o.outcome = 'fired' THEN nextval(job_seq) END ORDER BY o.id),
           array_agg(CASE o.outcome
                         WHEN 'gone' THEN 'the schedule was removed'
                         WHEN 'refused' THEN 'a schedule submits REFRESH MATERIALIZED VIEW '
                                             || 'only, not: ' || left(o.what, 60)
                         WHEN 'waits' THEN 'waits for the previous run (overlap queue)'
                         WHEN 'skipped' THEN CASE WHEN o.waiting
                                                  THEN 'one run already waits (overlap queue)'
                                                  ELSE 'the previous run was still going' END
                         WHEN 'fired' THEN o.why END ORDER BY o.id),
           array_agg(o.nxt ORDER BY o.id)
      INTO f_ids, f_slots, f_outcomes, f_jobs, f_reasons, f_next
      FROM o;
    -- the jobs: the schedule's REFRESH, owned by its owner, run logged in as its login
    INSERT INTO mvgraph.job_data (id, kind, statement, status, background, options, host, owner,
                                  login, submitted_at)
    SELECT u.job, 'refresh', s.what, 'queued', true, job_options, job_host, s.owner, s.login,
           clock_timestamp()
      FROM unnest(f_ids, f_jobs) AS u (id, job)
      JOIN mvgraph.schedule_data s ON s.id = u.id
     WHERE u.job IS NOT NULL
     ORDER BY u.job;
    -- the claims, with their jobs
    INSERT INTO mvgraph.schedule_slot_data (schedule_id, slot, status, job_id, manual, reason,
                                            claimed_by)
    SELECT u.id, u.at, CASE u.outcome WHEN 'skipped' THEN 'skipped' ELSE 'fired' END, u.job,
           false, u.why, by_whom
      FROM unnest(f_ids, f_slots, f_outcomes, f_jobs, f_reasons) AS u (id, at, outcome, job, why)
     WHERE u.outcome IN ('fired', 'waits', 'skipped')
     ORDER BY u.id
    ON CONFLICT (schedule_id, slot) DO NOTHING;
    -- the schedules' last start, last job and next run
    UPDATE mvgraph.schedule_data d
       SET next_run = u.nxt,
           last_start = CASE WHEN u.job IS NULL THEN d.last_start ELSE now() END,
           last_job = coalesce(u.job, d.last_job)
      FROM unnest(f_ids, f_jobs, f_next, f_outcomes) AS u (id, job, nxt, outcome)
     WHERE d.id = u.id AND u.outcome <> 'gone';
    PERFORM pg_notify('mvgraph_jobs', u.job::text) FROM unnest(f_jobs) AS u (job)
      WHERE u.job IS NOT NULL;
    RETURN QUERY
    SELECT u.id, u.at, u.outcome, u.job, CASE WHEN u.outcome = 'taken' THEN NULL ELSE u.why END,
           j.submitted_at
      FROM unnest(f_ids, f_slots, f_outcomes, f_jobs, f_reasons) AS u (id, at, outcome, job, why)
      LEFT JOIN mvgraph.job_data j ON j.id = u.job
     ORDER BY u.id;
END
$$;

-- Record slots that do not run (missed: a catch-up, slots coalesced while a daemon was late) in
-- one statement, once each (the unique key); returns those recorded by this call. Schedules
-- removed meanwhile are left out.
CREATE FUNCTION mvgraph.record_slots(schedule_ids bigint[], slots timestamptz[],
                                     slot_status text, why text, by_whom text)
RETURNS TABLE (schedule_id bigint, slot timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.require_level('worker', 'recording schedule slots');
    RETURN QUERY
    INSERT INTO mvgraph.schedule_slot_data AS ss (schedule_id, slot, status, manual, reason,
                                                  claimed_by)
    SELECT u.id, u.at, slot_status, false, why, by_whom
      FROM unnest(schedule_ids, slots) AS u (id, at)
     WHERE EXISTS (SELECT FROM mvgraph.schedule_data d WHERE d.id = u.id)
     ORDER BY u.id, u.at
    ON CONFLICT (schedule_id, slot) DO NOTHING
    RETURNING ss.schedule_id, ss.slot;
END
$$;

-- The latest slot recorded by a daemon (not by run-now) of each schedule.
CREATE FUNCTION mvgraph.last_clock_slots(schedule_ids bigint[])
RETURNS TABLE (schedule_id bigint, slot timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.require_level('worker', 'catching up schedules');
    RETURN QUERY
    SELECT u.id, (SELECT max(ss.slot) FROM mvgraph.schedule_slot_data ss
                   WHERE ss.schedule_id = u.id AND NOT ss.manual)
      FROM unnest(schedule_ids) AS u (id);
END
$$;

-- The runs that ended, written to their schedules in one statement (at most 100 per call, each
-- end once across daemons: the slots are locked, others' skipped): per slot as
-- mvgraph.schedule_run_ended does, the schedules locked in id order (as fire_slots locks them).
CREATE FUNCTION mvgraph.close_schedule_ends()
RETURNS TABLE (schedule_id bigint, slot timestamptz, job_id bigint, status text, error text,
               name text, failure_count integer, broke boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    e record;
    r record;
BEGIN
    PERFORM mvgraph.require_level('worker', 'closing schedule runs');
    FOR e IN SELECT x.* FROM mvgraph.schedule_ends() x ORDER BY x.schedule_id, x.slot LOOP
        SELECT * INTO r
          FROM mvgraph.schedule_run_ended(e.schedule_id, e.slot, e.finished_at, e.status,
                                          e.error) x;
        CONTINUE WHEN NOT FOUND;  -- the schedule is gone
        schedule_id := e.schedule_id;
        slot := e.slot;
        job_id := e.job_id;
        status := e.status;
        error := e.error;
        name := r.name;
        failure_count := r.failure_count;
        broke := r.broke;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Daemons LISTEN on mvgraph_schedules: 'insert:ID', 'update:ID' or 'delete:ID'; an update that
-- only writes a firing's or a run end's bookkeeping (next run, last start, last job, last end,
-- status and error, the failure count) is not announced; becoming broken is.
CREATE OR REPLACE FUNCTION mvgraph.schedule_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    o mvgraph.schedule_data;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        o := OLD;
        o.next_run := NEW.next_run;
        o.last_start := NEW.last_start;
        o.last_job := NEW.last_job;
        o.last_end := NEW.last_end;
        o.last_status := NEW.last_status;
        o.last_error := NEW.last_error;
        o.failure_count := NEW.failure_count;
        o.updated_at := NEW.updated_at;
        IF o IS NOT DISTINCT FROM NEW THEN
            RETURN NULL;
        END IF;
    END IF;
    PERFORM pg_catalog.pg_notify('mvgraph_schedules', lower(TG_OP) || ':' ||
            CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END);
    RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION
    mvgraph.fire_slots(bigint[], timestamptz[], text[], timestamptz[], text, jsonb, text),
    mvgraph.close_schedule_ends(), mvgraph.record_slots(bigint[], timestamptz[], text, text, text),
    mvgraph.last_clock_slots(bigint[]) FROM PUBLIC;

INSERT INTO mvgraph.level_grant (level, kind, object, privilege) VALUES
    ('worker', 'FUNCTION',
     'mvgraph.fire_slots(bigint[], timestamptz[], text[], timestamptz[], text, jsonb, text)',
     'EXECUTE'),
    ('worker', 'FUNCTION', 'mvgraph.close_schedule_ends()', 'EXECUTE'),
    ('worker', 'FUNCTION', 'mvgraph.record_slots(bigint[], timestamptz[], text, text, text)',
     'EXECUTE'),
    ('worker', 'FUNCTION', 'mvgraph.last_clock_slots(bigint[])', 'EXECUTE');

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
