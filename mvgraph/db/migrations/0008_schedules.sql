-- Schedules: one per materialized view, fired by the daemon (which submits a job per slot).
-- The table is the only source of truth; scheduler.pg_task is GaussDB's view of it. The CHECKs
-- below are mirrored one to one by the enums of mvgraph/model/status.py.

CREATE TABLE mvgraph.schedule (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE,       -- the view's qualified name when it was scheduled
    what          text NOT NULL,              -- the statement a firing submits (kept by trigger)
    view_oid      oid NOT NULL UNIQUE,        -- the materialized view (one schedule per view)
    view_name     text NOT NULL,              -- its qualified name, as last seen
    behavior      text NOT NULL DEFAULT 'DEFAULT' CONSTRAINT schedule_behavior_check
                  CHECK (behavior IN ('DEFAULT', 'RESTRICT', 'CASCADE FORWARD',
                                      'CASCADE BACKWARD', 'CASCADE ALL')),
    kind          text NOT NULL CONSTRAINT schedule_kind_check
                  CHECK (kind IN ('interval', 'cron', 'lag')),
    start_at      timestamptz,                -- interval: the first slot
    every         interval,                   -- interval: exact duration, no months
    every_text    text,                       -- interval: as written (pg_task.interval)
    cron          text,                       -- cron: five fields, read in tz
    tz            text NOT NULL DEFAULT 'UTC',
    target_lag    interval,                   -- lag: a freshness target (the daemon's logic)
    overlap       text NOT NULL DEFAULT 'skip' CONSTRAINT schedule_overlap_check
                  CHECK (overlap IN ('skip', 'queue')),
    next_run      timestamptz,                -- next slot (written by mvgraph; the daemon too)
    last_start    timestamptz,
    last_end      timestamptz,
    last_status   text CONSTRAINT schedule_last_status_check
                  CHECK (last_status IN ('done', 'failed', 'cancelled')),
    last_error    text,
    last_job      bigint,
    failure_count integer NOT NULL DEFAULT 0,
    is_broken     boolean NOT NULL DEFAULT false,
    enabled       boolean NOT NULL DEFAULT true,
    owner         name NOT NULL DEFAULT current_user,
    source        text,                       -- 'sql', 'cli', or file:line of a synced file
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedule_timing_check CHECK (CASE kind
        WHEN 'interval' THEN start_at IS NOT NULL AND every > interval '0' AND cron IS NULL
                             AND target_lag IS NULL
        WHEN 'cron' THEN cron IS NOT NULL AND every IS NULL AND target_lag IS NULL
        ELSE target_lag > interval '0' AND every IS NULL AND cron IS NULL END)
);

-- Every slot a daemon handled (or a run-now): claimed once, by the unique key, whoever comes
-- first; the history of a schedule.
CREATE TABLE mvgraph.schedule_slot (
    schedule_id bigint NOT NULL REFERENCES mvgraph.schedule (id) ON DELETE CASCADE,
    slot        timestamptz NOT NULL,
    status      text NOT NULL CONSTRAINT schedule_slot_status_check
                CHECK (status IN ('fired', 'skipped', 'missed')),
    job_id      bigint REFERENCES mvgraph.job (id) ON DELETE SET NULL,
    manual      boolean NOT NULL DEFAULT false,   -- schedule run-now
    reason      text,                             -- why skipped or missed
    claimed_by  text,                             -- daemon or process that recorded it
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_id, slot)
);
CREATE INDEX schedule_slot_job ON mvgraph.schedule_slot (job_id) WHERE job_id IS NOT NULL;

-- The owner is whoever inserts the row (as for jobs).
CREATE TRIGGER schedule_owner BEFORE INSERT ON mvgraph.schedule
    FOR EACH ROW EXECUTE FUNCTION mvgraph.job_owner();

-- what and view_name follow the view's current name and the behaviour, on every write.
CREATE FUNCTION mvgraph.schedule_what() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    SELECT format('%I.%I', n.nspname, c.relname) INTO NEW.view_name
      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = NEW.view_oid;
    IF NEW.view_name IS NULL THEN
        RAISE EXCEPTION 'no relation with oid %', NEW.view_oid USING ERRCODE = 'undefined_table';
    END IF;
    NEW.what := 'REFRESH MATERIALIZED VIEW ' || NEW.view_name || ' ' || NEW.behavior;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
CREATE TRIGGER schedule_what BEFORE INSERT OR UPDATE ON mvgraph.schedule
    FOR EACH ROW EXECUTE FUNCTION mvgraph.schedule_what();

-- Daemons LISTEN on mvgraph_schedules: the payload is 'insert:ID', 'update:ID' or 'delete:ID'.
CREATE FUNCTION mvgraph.schedule_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.pg_notify('mvgraph_schedules', lower(TG_OP) || ':' ||
            CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END);
    RETURN NULL;
END
$$;
CREATE TRIGGER schedule_notify AFTER INSERT OR UPDATE OR DELETE ON mvgraph.schedule
    FOR EACH ROW EXECUTE FUNCTION mvgraph.schedule_notify();

-- Body of the optional sql_drop event trigger (installed with the others by prepare() where
-- permitted), replacing 0007's: dropping a materialized view, however it is dropped, cancels the
-- background CREATE populating it (as 0007 did) and drops its schedule.
CREATE OR REPLACE FUNCTION mvgraph.on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j record;
BEGIN
    DELETE FROM mvgraph.schedule
     WHERE view_oid IN (SELECT objid FROM pg_event_trigger_dropped_objects()
                         WHERE classid = 'pg_class'::regclass AND objsubid = 0
                           AND object_type = 'materialized view');
    FOR j IN SELECT job.id, job.status, d.object_identity
               FROM pg_event_trigger_dropped_objects() d
               JOIN mvgraph.job job ON job.kind = 'create'
                AND job.status IN ('queued', 'suspended', 'running')
                AND job.options ? 'mv' AND (job.options ->> 'mv')::oid = d.objid
              WHERE d.classid = 'pg_class'::regclass AND d.objsubid = 0
                AND d.object_type = 'materialized view' LOOP
        IF j.status = 'running' THEN
            UPDATE mvgraph.job SET request = 'cancel' WHERE id = j.id;
        ELSE
            UPDATE mvgraph.job_step
               SET status = 'cancelled', finished_at = clock_timestamp(),
                   reason = 'the view was dropped'
             WHERE job_id = j.id AND status IN ('pending', 'running');
            UPDATE mvgraph.job
               SET status = 'cancelled', request = NULL, lease_until = NULL,
                   finished_at = clock_timestamp(),
                   error = format('cancelled: materialized view %s was dropped', j.object_identity)
             WHERE id = j.id;
        END IF;
    END LOOP;
END
$$;

-- GaussDB's scheduler.pg_task, over mvgraph.schedule.
CREATE SCHEMA IF NOT EXISTS scheduler;
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

-- Nothing here is open to PUBLIC: grant it explicitly.
REVOKE ALL ON mvgraph.schedule, mvgraph.schedule_slot, scheduler.pg_task FROM PUBLIC;
REVOKE ALL ON FUNCTION mvgraph.on_sql_drop(), mvgraph.schedule_what(), mvgraph.schedule_notify()
    FROM PUBLIC;
