-- Hot firing (issue 22): a daemon fires every slot due at one instant with ONE statement,
-- mvgraph.fire_slots, instead of about ten round trips per slot (busy check, claim, submit, link,
-- next run, submitted time). Per slot, in schedule order (so that daemons firing the same slots
-- lock the schedules in one order and never deadlock), with the schedule row locked:
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
    f        record;
    s        mvgraph.schedule_data;
    busy     boolean;
    waiting  boolean;
    st       text;
    new_job  bigint;
    n        integer;
BEGIN
    PERFORM mvgraph.require_level('worker', 'firing schedules');
    FOR f IN SELECT u.id, u.at, u.why, u.nxt
               FROM unnest(schedule_ids, slots, whys, next_runs) AS u (id, at, why, nxt)
              ORDER BY u.id, u.at LOOP
        schedule_id := f.id;
        slot := f.at;
        job_id := NULL;
        submitted_at := NULL;
        SELECT * INTO s FROM mvgraph.schedule_data d WHERE d.id = f.id FOR UPDATE;
        IF NOT FOUND THEN
            outcome := 'gone';
            reason := 'the schedule was removed';
            RETURN NEXT;
            CONTINUE;
        END IF;
        IF mvgraph.statement_kind(s.what) <> 'refresh' OR s.owner IS NULL THEN
            outcome := 'refused';
            reason := format('a schedule submits REFRESH MATERIALIZED VIEW only, not: %s',
                             left(s.what, 60));
            RETURN NEXT;
            CONTINUE;
        END IF;
        busy := EXISTS (SELECT FROM mvgraph.schedule_slot_data ss
                          JOIN mvgraph.job_data j ON j.id = ss.job_id
                         WHERE ss.schedule_id = f.id
                           AND j.status IN ('queued', 'running', 'suspended'));
        waiting := EXISTS (SELECT FROM mvgraph.schedule_slot_data ss
                            WHERE ss.schedule_id = f.id AND ss.status = 'fired'
                              AND ss.job_id IS NULL AND NOT ss.ended AND NOT ss.manual);
        IF busy AND s.overlap = 'queue' AND NOT waiting THEN
            st := 'fired';
            outcome := 'waits';
            reason := 'waits for the previous run (overlap queue)';
        ELSIF busy THEN
            st := 'skipped';
            outcome := 'skipped';
            reason := CASE WHEN waiting THEN 'one run already waits (overlap queue)'
                           ELSE 'the previous run was still going' END;
        ELSE
            st := 'fired';
            outcome := 'fired';
            reason := f.why;
        END IF;
        INSERT INTO mvgraph.schedule_slot_data (schedule_id, slot, status, manual, reason,
                                                claimed_by)
        VALUES (f.id, f.at, st, false, reason, by_whom)
        ON CONFLICT (schedule_id, slot) DO NOTHING;
        GET DIAGNOSTICS n = ROW_COUNT;
        IF n = 0 THEN
            outcome := 'taken';  -- another daemon (or this one, earlier) recorded it
            reason := NULL;
        ELSIF outcome = 'fired' THEN
            INSERT INTO mvgraph.job_data (kind, statement, status, background, options, host,
                                          owner, login, submitted_at)
            VALUES ('refresh', s.what, 'queued', true, job_options, job_host, s.owner, s.login,
                    clock_timestamp())
            RETURNING id, job_data.submitted_at INTO new_job, submitted_at;
            job_id := new_job;
            UPDATE mvgraph.schedule_slot_data ss SET job_id = new_job
             WHERE ss.schedule_id = f.id AND ss.slot = f.at;
            PERFORM pg_notify('mvgraph_jobs', new_job::text);
        END IF;
        UPDATE mvgraph.schedule_data d
           SET next_run = f.nxt,
               last_start = CASE WHEN job_id IS NULL THEN d.last_start ELSE now() END,
               last_job = coalesce(job_id, d.last_job)
         WHERE d.id = f.id;
        RETURN NEXT;
    END LOOP;
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
