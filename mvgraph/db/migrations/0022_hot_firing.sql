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
-- Also: the mvgraph_schedules NOTIFY is not sent for the daemons' own bookkeeping of a firing
-- (next_run, last_start, last_job): each firing made every daemon read its schedule again.

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

-- Daemons LISTEN on mvgraph_schedules: 'insert:ID', 'update:ID' or 'delete:ID'; an update that
-- only writes a firing's bookkeeping (next run, last start, last job) is not announced.
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
    mvgraph.fire_slots(bigint[], timestamptz[], text[], timestamptz[], text, jsonb, text)
    FROM PUBLIC;

INSERT INTO mvgraph.level_grant (level, kind, object, privilege) VALUES
    ('worker', 'FUNCTION',
     'mvgraph.fire_slots(bigint[], timestamptz[], text[], timestamptz[], text, jsonb, text)',
     'EXECUTE');

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
