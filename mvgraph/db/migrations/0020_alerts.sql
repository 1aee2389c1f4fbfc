-- Alerts (mvgraph daemon, mvgraph/scheduler/alerts.py): the events worth waking someone for (a
-- schedule became broken, a freshness target missed by more than its lag, a job failed, a daemon
-- or worker went silent) are sent once each, by whichever daemon sees them first. The daemon
-- claims an event with a row of mvgraph.alert_sent, keyed by (kind, key), in the transaction that
-- NOTIFYs mvgraph_events with the event's JSON payload: a NOTIFY is delivered at commit, so only
-- the claim that committed is heard, and only the daemon that made it posts to its webhook.
--
-- Also: workers have a heartbeat row (mvgraph.worker) as daemons have (mvgraph.daemon), so that
-- a worker that died or hangs is noticed while it runs no job; a schedule records when it
-- became broken (schedule_data.broken_at).

CREATE TABLE mvgraph.alert_sent (
    kind    text NOT NULL CONSTRAINT alert_sent_kind_check
            CHECK (kind IN ('schedule_broken', 'target_missed', 'job_failed', 'daemon_silent',
                            'worker_silent')),
    key     text NOT NULL,       -- the event: a job id, a schedule and when it broke, ...
    payload jsonb NOT NULL,      -- what was NOTIFYed (names and ids only: no SQL, no error text)
    sent_by text NOT NULL,       -- the daemon that claimed it
    sent_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, key)
);
CREATE INDEX alert_sent_at ON mvgraph.alert_sent (sent_at);

-- One row per running worker, written every heartbeat (its --heartbeat, the lease renewal
-- period) by its claim loop; a worker that stops cleanly deletes its row. A daemon's own worker
-- has the daemon's name.
CREATE TABLE mvgraph.worker (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL,
    host         text NOT NULL,
    pid          integer NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_s  double precision NOT NULL,  -- its period: silent only after several
    concurrency  integer NOT NULL,
    version      text NOT NULL
);
CREATE INDEX worker_heartbeat ON mvgraph.worker (heartbeat_at);

REVOKE ALL ON mvgraph.alert_sent, mvgraph.worker FROM PUBLIC;

-- When a schedule last became broken (NULL while it is not): what tells one breaking from the
-- next (a resume clears it; failures of runs still going when it broke do not move it).
ALTER TABLE mvgraph.schedule_data ADD COLUMN broken_at timestamptz;
UPDATE mvgraph.schedule_data SET broken_at = coalesce(last_end, updated_at) WHERE is_broken;

CREATE FUNCTION mvgraph.schedule_broken_at() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT NEW.is_broken THEN
        NEW.broken_at := NULL;
    ELSIF NOT OLD.is_broken THEN
        NEW.broken_at := now();
    END IF;
    RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION mvgraph.schedule_broken_at() FROM PUBLIC;
CREATE TRIGGER schedule_broken_at BEFORE UPDATE OF is_broken ON mvgraph.schedule_data
    FOR EACH ROW EXECUTE FUNCTION mvgraph.schedule_broken_at();

-- The view shows the new column (0015's definition, the column appended).
CREATE OR REPLACE VIEW mvgraph.schedule WITH (security_barrier) AS
SELECT * FROM mvgraph.schedule_data s
 WHERE (SELECT mvgraph.sees_all()) OR s.owner IN (SELECT mvgraph.my_roles());

CREATE FUNCTION mvgraph.worker_register(worker_name text, worker_host text, worker_pid integer,
                                        worker_concurrency integer,
                                        worker_heartbeat_s double precision,
                                        worker_version text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    new_id bigint;
BEGIN
    PERFORM mvgraph.require_level('worker', 'registering a worker');
    INSERT INTO mvgraph.worker (name, host, pid, concurrency, heartbeat_s, version)
    VALUES (worker_name, worker_host, worker_pid, worker_concurrency, worker_heartbeat_s,
            worker_version)
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;

-- NULL when the row is gone (deleted by hand): the worker registers again.
CREATE FUNCTION mvgraph.worker_heartbeat(worker_id bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    found_id bigint;
BEGIN
    PERFORM mvgraph.require_level('worker', 'a worker heartbeat');
    UPDATE mvgraph.worker SET heartbeat_at = now() WHERE id = worker_id
    RETURNING id INTO found_id;
    RETURN found_id;
END
$$;

CREATE FUNCTION mvgraph.worker_remove(worker_id bigint) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.require_level('worker', 'removing a worker');
    DELETE FROM mvgraph.worker WHERE id = worker_id;
END
$$;

-- Claim an event and NOTIFY its payload (at commit); false when it was claimed before, by this
-- daemon or another one (then nothing is sent). The payload's kind must be the event's.
CREATE FUNCTION mvgraph.raise_alert(alert_kind text, alert_key text, alert_payload jsonb,
                                    sender text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM mvgraph.require_level('worker', 'raising an alert');
    IF alert_payload->>'kind' IS DISTINCT FROM alert_kind THEN
        RAISE EXCEPTION 'alert payload of kind % for an event of kind %',
              alert_payload->>'kind', alert_kind USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO mvgraph.alert_sent (kind, key, payload, sent_by)
    VALUES (alert_kind, alert_key, alert_payload, sender)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM pg_notify('mvgraph_events', alert_payload::text);
    RETURN true;
END
$$;

-- Claims older than the events daemons look for (at most a day back) are of no use any more.
CREATE FUNCTION mvgraph.purge_alerts() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    gone bigint;
BEGIN
    PERFORM mvgraph.require_level('worker', 'purging alerts');
    DELETE FROM mvgraph.alert_sent WHERE sent_at < now() - interval '2 days';
    GET DIAGNOSTICS gone = ROW_COUNT;
    RETURN gone;
END
$$;

REVOKE ALL ON FUNCTION
    mvgraph.worker_register(text, text, integer, integer, double precision, text),
    mvgraph.worker_heartbeat(bigint), mvgraph.worker_remove(bigint),
    mvgraph.raise_alert(text, text, jsonb, text), mvgraph.purge_alerts() FROM PUBLIC;

-- Viewers see the workers (as they see the daemons); the claims name every owner's schedules
-- and jobs, so only the worker level (which sees every job and schedule) reads them.
INSERT INTO mvgraph.level_grant (level, kind, object, privilege) VALUES
    ('viewer', 'TABLE', 'mvgraph.worker', 'SELECT'),
    ('worker', 'TABLE', 'mvgraph.alert_sent', 'SELECT'),
    ('worker', 'FUNCTION', 'mvgraph.worker_register(text, text, integer, integer, double precision, text)', 'EXECUTE'),
    ('worker', 'FUNCTION', 'mvgraph.worker_heartbeat(bigint)', 'EXECUTE'),
    ('worker', 'FUNCTION', 'mvgraph.worker_remove(bigint)', 'EXECUTE'),
    ('worker', 'FUNCTION', 'mvgraph.raise_alert(text, text, jsonb, text)', 'EXECUTE'),
    ('worker', 'FUNCTION', 'mvgraph.purge_alerts()', 'EXECUTE');

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
